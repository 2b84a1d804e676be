"""Print the README's flag tables from the scripts' own argparse parsers (so the two cannot drift apart)."""
import argparse
import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = ["get_activations_only", "reward_label", "train_value_model", "inference_intervention", "measure_reward",
           "metrics", "gpt4_eval", "make_table", "decode_methods", "compare_methods", "sweep", "finetune_baseline"]


def parser_of(module):
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


for name in SCRIPTS:
    parser = parser_of(importlib.import_module(name))
    print(f"\n**`{name}.py`**\n\n| flag | default | meaning |\n|---|---|---|")
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        choices = f" ({'/'.join(map(str, action.choices))})" if action.choices else ""
        default = "required" if action.required else f"`{action.default}`"
        text = (action.help or "").replace("|", "\\|").replace("\\n", " ")
        names = " ".join(f"`{name}`" for name in action.option_strings)
        print(f"| {names} | {default} | {text}{choices} |")
