"""Write docs/flags.md: one table of flags per top-level script, read from the script's own argparse parser (so the
page and the scripts cannot drift apart).

    python scripts/flag_table.py            # write docs/flags.md
    python scripts/flag_table.py --check    # exit 1, with one line, if docs/flags.md differs from what it would write

Every top-level script that defines build_parser() or parse_args() is covered: the pipeline's scripts first, in
the order they run, then any others by name. A script's parser comes from build_parser() when it defines one;
otherwise parse_args([]) is called with ArgumentParser.parse_args replaced by a function that captures the parser.
"""
import argparse
import ast
import importlib
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# run as a file outside the repository root (python DIR/FILE.py): the root holds utils
sys.path.insert(0, ROOT)
OUTPUT = os.path.join(ROOT, "docs", "flags.md")
ORDER = ["get_activations_only", "reward_label", "train_value_model", "inference_intervention", "measure_reward",
         "metrics", "gpt4_eval", "make_table", "report_html", "decode_methods", "compare_methods", "sweep",
         "finetune_baseline", "serve"]
HEADER = """# Flags

Every script's `--help` lists its flags with their meaning and default. Booleans take `True`/`False`
(`--use_intervention False` means off).

This page is generated from the scripts' own parsers by `python scripts/flag_table.py`; do not edit it by hand.
`python scripts/flag_table.py --check` says whether it is up to date.
"""


def scripts_with_a_parser(root=ROOT):
    """Module names of the top-level scripts that define build_parser() or parse_args(), in ORDER, then by name."""
    found = []
    for name in sorted(os.listdir(root)):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(root, name), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        if functions & {"build_parser", "parse_args"}:
            found.append(name[:-3])
    return [name for name in ORDER if name in found] + [name for name in found if name not in ORDER]


def parser_of(module):
    if hasattr(module, "build_parser"):
        return module.build_parser()
    captured = {}
    original = argparse.ArgumentParser.parse_args

    def capture(self, *_args, **_kwargs):
        captured["parser"] = self
        raise SystemExit
    argparse.ArgumentParser.parse_args = capture
    try:
        module.parse_args([])
    except SystemExit:
        pass
    finally:
        argparse.ArgumentParser.parse_args = original
    return captured["parser"]


def table(name, parser):
    summary = " ".join((parser.description or "").strip().split("\n\n")[0].split())
    lines = [f"## `{name}.py`", ""]
    if summary:
        lines += [summary, ""]
    lines += ["| flag | default | meaning |", "|---|---|---|"]
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        choices = f" ({'/'.join(map(str, action.choices))})" if action.choices else ""
        default = "required" if action.required else f"`{action.default}`"
        text = (action.help or "").replace("|", "\\|").replace("\\n", " ")
        names = " ".join(f"`{option}`" for option in action.option_strings)
        lines.append(f"| {names} | {default} | {text}{choices} |")
    return "\n".join(lines) + "\n"


def render():
    """The text of docs/flags.md."""
    parts = [HEADER]
    for name in scripts_with_a_parser():
        parts.append(table(name, parser_of(importlib.import_module(name))))
    return "\n".join(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if docs/flags.md differs from what would be written")
    args = parser.parse_args(argv)
    text = render()
    relative = os.path.relpath(OUTPUT, ROOT)
    if args.check:
        try:
            with open(OUTPUT, encoding="utf-8") as f:
                current = f.read()
        except FileNotFoundError:
            current = None
        if current != text:
            print(f"{relative} is out of date: run python scripts/flag_table.py")
            return 1
        return 0
    os.makedirs(os.path.dirname(OUTPUT), exist_ok=True)
    with open(OUTPUT, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {relative}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
