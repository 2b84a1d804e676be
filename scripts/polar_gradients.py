"""Does the value model's edit depend on what the prompt asks for? On the prompt-dependent task's TUNING split.

    python scripts/polar_gradients.py --folders 'runs/polar/seed*' --out results/smollm2_135M_demo_polar_gradients.md

For each draw's value model (stage 3 of scripts/polar.sh) and every valid step of the tuning split's greedy answers
(stage 1's states o_t), the gradient dV/do that RE-Control climbs. Reported per draw, with the prompts split by the
polarity they ask for (warm: +1, frank: -1):
- cos(mean gradient of the warm rows, mean gradient of the frank rows): near 1, the edit pushes every answer the
  same way, as a static vector does; negative, it pushes the two halves apart, as the task needs;
- the mean cosine of each row's gradient with the mean gradient of all rows (how much of the edit is one direction);
- the correlation of V(o_t) with the answer's reward within each half, and over all rows (what the value model
  predicts). No test prompt is read.
"""
import glob
import os
import sys

import torch

# run as a file outside the repository root (python DIR/FILE.py): the root holds utils
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils import cli  # noqa: E402
from utils.features import load_sequences  # noqa: E402
from utils.io import features_path, load_json, save_table  # noqa: E402
from utils.rewards import requested_polarity  # noqa: E402
from utils.value_model import load_value_model, value_and_gradient  # noqa: E402

M, D = "smollm2_135M", "demo_polar"


def parse_args(argv=None):
    parser = cli.make_parser(__doc__)
    parser.add_argument("--folders", type=str, default="runs/polar/seed*", help="glob of the draws' run folders")
    parser.add_argument("--value_model", type=str, default="value_model_smollm2_135M_demo_polar_0.001_td1_vf0.1_es",
                        help="the value model's file name (no extension) under each folder's trained_model/; a draw "
                             "with seed K > 0 adds _sK, as stage 3 names it")
    parser.add_argument("--out", type=str, default=None, help="also write the table to this Markdown file")
    return parser.parse_args(argv)


def correlation(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-12))


def draw_row(folder, value_model_name):
    seed = os.path.basename(folder).removeprefix("seed")
    suffix = f"_s{seed}" if seed.isdigit() and int(seed) else ""
    value_model = load_value_model(os.path.join(folder, "trained_model", value_model_name + suffix))
    data = load_sequences(folder, M, D, "tune")
    records = load_json(features_path(folder, M, D, "response", "tune"), "get_activations_only.py")
    signs = torch.tensor([requested_polarity(r["conversation"]) for r in records], dtype=torch.float32)
    states, lengths, rewards = data.batch(torch.arange(len(data)))
    row_sign = torch.repeat_interleave(signs, lengths)
    row_reward = torch.repeat_interleave(rewards, lengths)
    values, gradients = value_and_gradient(value_model.linear_weights(torch.float32), states)
    warm, frank = row_sign > 0, row_sign < 0
    mean_all = gradients.mean(0)
    cos = torch.nn.functional.cosine_similarity
    return {"draw": os.path.basename(folder), "rows": int(lengths.sum()), "prompts": len(records),
            "cos_halves": float(cos(gradients[warm].mean(0), gradients[frank].mean(0), dim=0)),
            "cos_to_mean": float(cos(gradients, mean_all[None], dim=1).mean()),
            "corr_warm": correlation(values[warm], row_reward[warm]),
            "corr_frank": correlation(values[frank], row_reward[frank]),
            "corr_all": correlation(values, row_reward)}


def main(argv=None):
    args = parse_args(argv)
    folders = sorted(glob.glob(args.folders))
    if not folders:
        raise cli.UsageError(f"no folder matches {args.folders}; run scripts/polar.sh first")
    lines = ["| draw | tuning rows (prompts) | cos(mean gradient warm, frank) | mean cos(gradient, mean gradient) | "
             "corr(V, reward) warm | frank | all |", "|---|---|---|---|---|---|---|"]
    for folder in folders:
        r = draw_row(folder, args.value_model)
        lines.append(f"| {r['draw']} | {r['rows']} ({r['prompts']}) | {r['cos_halves']:+.3f} | {r['cos_to_mean']:+.3f} "
                     f"| {r['corr_warm']:+.3f} | {r['corr_frank']:+.3f} | {r['corr_all']:+.3f} |")
    save_table("\n".join(lines) + "\n", args.out, "`python scripts/polar_gradients.py` (the tuning split only)")


if __name__ == "__main__":
    cli.main_guard(main)
