"""The value-model lever table: one row per `scripts/levers.sh` lever, from its sweep on the tuning split.

    python scripts/lever_table.py --output_dir runs/demo --out results/smollm2_135M_demo_levers.md
"""
import glob
import os
import sys

# run as a file outside the repository root (python DIR/FILE.py): the root holds utils
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils import cli  # noqa: E402
from utils.io import atomic_path, load_json, output_path  # noqa: E402
from utils.sweep import describe  # noqa: E402

LEVER_FLAGS = ("td_lambda", "early_stopping", "val_fraction", "standardize_rewards", "hidden_dim", "num_layers",
               "weight_decay", "epochs")


def parse_args(argv=None):
    parser = cli.make_parser(__doc__)
    parser.add_argument("--output_dir", type=str, default="runs/demo", help="the run folder levers.sh wrote")
    parser.add_argument("--prefix", type=str, default="smollm2_135M_demo_sweep_lever_", help="sweep result prefix")
    parser.add_argument("--out", type=str, default=None, help="also write the table to this Markdown file")
    return parser.parse_args(argv)


def cell_text(cell, base):
    if cell is None:
        return "none qualifies"
    return (f"{describe(cell, ('num_updates', 'step_size'))}: {cell['paired_difference']:+.3f} ± "
            f"{cell['paired_standard_error']:.3f} "
            f"({cell['paired_difference'] / cell['paired_standard_error']:.1f} SE), div "
            f"{cell['diversity'] / base['diversity']:.2f}x, coh {cell['coherence'] / base['coherence']:.2f}x")


def main(argv=None):
    args = parse_args(argv)
    paths = sorted(p for p in glob.glob(output_path(args.output_dir, "results", args.prefix + "*"))
                   if not p.endswith(".meta.json"))
    if not paths:
        raise cli.UsageError(f"no {args.prefix}*.json under {args.output_dir}/results; run scripts/levers.sh first")
    lines = ["| lever | stage-3 flags | epoch kept | MC error | terminal loss | best reward within limits "
             "(constrained rule) | paper rule |", "|---|---|---|---|---|---|---|"]
    eval_splits = set()
    for path in sorted(paths, key=os.path.getmtime):
        result = load_json(path)
        vm = load_json(result["value_model"] + ".json")
        flags = " ".join(f"{k}={vm['settings'][k]}" for k in LEVER_FLAGS
                         if k in vm["settings"] and vm["settings"][k] not in (None, False, 0, 0.0))
        name = os.path.basename(path)[len(args.prefix):-5]
        eval_splits.add(vm["settings"].get("eval_split", "test"))
        lines.append(f"| {name} | {flags} | {vm['epoch']} | {vm.get('test_mc_error', float('nan')):.2f} | "
                     f"{vm['test_terminal_loss']:.4f} (mean predictor {vm['baseline_terminal_loss']:.4f}) | "
                     f"{cell_text(result['rules']['constrained'], result['base'])} | "
                     f"{cell_text(result['rules']['paper'], result['base'])} |")
    first = load_json(paths[0])
    table = "\n".join(lines) + (f"\n\nSwept on the '{first['split']}' split ({first['num_prompts']} prompts), alpha in "
                                f"{sorted({c['step_size'] for c in first['cells']})}, n = 20; limits: diversity >= "
                                f"0.9x and coherence >= 0.95x base. MC error: sum over the steps of "
                                f"(V(o_t) - r)^2 per response, and terminal loss: (V(o_T) - r)^2, on the greedy "
                                f"responses of the {' and '.join(sorted(eval_splits))} split (reported, not used for "
                                f"a choice). Produced by `bash scripts/levers.sh`.\n")
    print(table)
    if args.out:
        with atomic_path(args.out) as tmp:
            with open(tmp, "w") as f:
                f.write(table)


if __name__ == "__main__":
    cli.main_guard(main)
