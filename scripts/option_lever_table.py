"""The lever table of issue 20's options (scripts/option_levers.sh): one row per RE-Control run on the tuning split.

    python scripts/option_lever_table.py --output_dir runs/demo --out results/smollm2_135M_demo_option_levers.md

Each row: the run's setting (alpha, n, gate, the value model's variant), its reward minus the tuning split's base
(paired, SE over prompts) under the reward model and the held-out scorer, diversity and coherence over base's, the
fraction of decoding rows the gate edited (HF counts every row of a batch at every step, answers already ended
included), and the decoding time.
"""
import glob
import os
import sys

# run as a file outside the repository root (python DIR/FILE.py): the root holds utils
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils import cli  # noqa: E402
from utils.io import atomic_path, load_json, output_path, read_json_or_none  # noqa: E402
from utils.sweep import paired_text  # noqa: E402


def parse_args(argv=None):
    parser = cli.make_parser(__doc__)
    parser.add_argument("--output_dir", type=str, default="runs/demo", help="the run folder option_levers.sh wrote")
    parser.add_argument("--model_name", type=str, default="smollm2_135M")
    parser.add_argument("--dataset_name", type=str, default="demo")
    parser.add_argument("--out", type=str, default=None, help="also write the table to this Markdown file")
    return parser.parse_args(argv)


def row(root, run, base_eval):
    meta = load_json(os.path.join(root, "response", f"{run}.meta.json"))
    reward = read_json_or_none(output_path(root, "reward", run))
    evaluation = read_json_or_none(output_path(root, "evaluation", run))
    if reward is None or evaluation is None or "paired_difference" not in reward:
        return None
    options = meta["settings"]
    gate = (f"{options['option_gate']} {'>' if options['option_gate'] == 'entropy' else '<'} "
            f"{options['option_gate_threshold']:g}" if options.get("option_gate") else "every row")
    tally = meta.get("gate_tally")
    edited = f"{tally['edited'] / tally['rows']:.3f}" if tally else "1 (no gate)"
    variant = os.path.basename(options.get("value_model_file") or "").split("_es")[-1] or "(the demo's)"
    heldout = reward.get("heldout")
    return (f"| α {options['option_step_size']:g}, n {options['option_num_updates']} | {gate} | {variant} | "
            f"{paired_text(reward['paired_difference'], reward['paired_standard_error'])} | "
            + (f"{paired_text(heldout['paired_difference'], heldout['paired_standard_error'])}" if heldout else "—")
            + f" | {evaluation['diversity'] / base_eval['diversity']:.3f}x | "
            f"{evaluation['coherence'] / base_eval['coherence']:.3f}x | {edited} | {meta['seconds']:.1f} |")


def main(argv=None):
    args = parse_args(argv)
    prefix = f"{args.model_name}_{args.dataset_name}_"
    base = f"{prefix}base"  # stage 4 names a tuning-split run as it names a test-split one
    base_eval = load_json(output_path(args.output_dir, "evaluation", base), stage_hint="metrics.py")
    base_meta = load_json(os.path.join(args.output_dir, "response", f"{base}.meta.json"))
    lines = [f"RE-Control's options on the tuning split ({args.dataset_name}; differences against the tuning split's "
             f"base, whose decoding took {base_meta['seconds']:.1f} s):", "",
             "| setting | gate | value model | reward − base | held-out − base | diversity | coherence | "
             "fraction of rows edited | decoding s |", "|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(glob.glob(os.path.join(args.output_dir, "response", f"{prefix}*.meta.json"))):
        run = os.path.basename(path).removesuffix(".meta.json")
        meta = load_json(path)
        if run != base and meta.get("method") == "re_control" and meta["settings"].get("split") == "tune":
            text = row(args.output_dir, run, base_eval)
            if text:
                lines.append(text)
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        with atomic_path(args.out) as tmp:
            with open(tmp, "w") as f:
                f.write(table + "\nWritten by `python scripts/option_lever_table.py` from `bash "
                        "scripts/option_levers.sh`.\n")


if __name__ == "__main__":
    cli.main_guard(main)
