"""Every tuning-split cell of the prompt-dependent task's sweeps, split by the polarity the prompts ask for.

    python scripts/polar_halves.py --out results/smollm2_135M_demo_polar_halves.md

From the committed per-prompt files alone (results/per_prompt/polar/seed*: scripts/polar.sh exports every scored run
of a draw, the sweeps' tuning-split cells included, and the sweeps themselves). For each draw and each setting its
sweeps tried on the tuning split (RE-Control's
alpha and n, Static RE's strength): the reward minus base's on the warm half and on the frank half of the prompts
(vader_polar; mean over the half's prompts), and the mean over draws. A fixed vector that raises one half's reward
lowers the other's: this is where Static RE's cap shows. No test prompt is read.
"""
import glob
import os
import re
import statistics
import sys

# run as a file outside the repository root (python DIR/FILE.py): the root holds utils
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils import cli  # noqa: E402
from utils.data import load_records  # noqa: E402
from utils.io import load_json, save_table  # noqa: E402
from utils.results import load_per_prompt  # noqa: E402

PREFIX = "smollm2_135M_demo_polar_tune_"


def parse_args(argv=None):
    parser = cli.make_parser(__doc__)
    parser.add_argument("--folders", type=str, default="results/per_prompt/polar/seed*",
                        help="glob of the draws' per-prompt folders")
    parser.add_argument("--out", type=str, default=None, help="also write the table to this Markdown file")
    return parser.parse_args(argv)


def setting(run):
    """('RE-Control', 'alpha 2, n 10') or ('Static RE', 'strength 4') from a sweep cell's run name."""
    name = run.removeprefix(PREFIX)
    static = re.fullmatch(r"static_re_([0-9.]+)", name)
    if static:
        return "Static RE", f"strength {float(static.group(1)):g}"
    n, alpha = re.search(r"_(\d+)_([0-9.]+)$", name).groups()
    return "RE-Control", f"alpha {float(alpha):g}, n {n}"


def halves(folder):
    """{(method, setting): (warm difference, frank difference)} of one draw's tuning-split cells."""
    polarity = {r["id"]: r["polarity"] for r in load_records("demo_polar", "tune")}
    base = load_per_prompt(os.path.join(folder, f"{PREFIX}base.json"))
    ids = base.ids()
    cells = {}
    for path in sorted(glob.glob(os.path.join(folder, f"{PREFIX}*.json"))):
        run = load_per_prompt(path)
        if run.run == base.run:
            continue
        if run.ids() != ids:
            raise cli.UsageError(f"{path} answers other prompts than {base.run}; re-run scripts/polar.sh")
        differences = [r - b for r, b in zip(run.column(run.reward_model), base.column(base.reward_model))]
        warm = [d for d, i in zip(differences, ids) if polarity[i] == "warm"]
        frank = [d for d, i in zip(differences, ids) if polarity[i] == "frank"]
        cells[setting(run.run)] = (statistics.mean(warm), statistics.mean(frank))
    return cells


def chosen(folder):
    """The settings the draw's sweeps chose ({method: setting text})."""
    picks = {}
    for name, method in (("", "RE-Control"), ("_static_re", "Static RE")):
        sweep = load_json(os.path.join(folder, "sweeps", f"smollm2_135M_demo_polar_sweep{name}.json"))
        cell = sweep["chosen"]
        picks[method] = (f"strength {cell['strength']:g}" if "strength" in cell
                         else f"alpha {cell['step_size']:g}, n {cell['num_updates']}")
    return picks


def main(argv=None):
    args = parse_args(argv)
    folders = sorted(glob.glob(args.folders))
    if not folders:
        raise cli.UsageError(f"no folder matches {args.folders}; run scripts/polar.sh first")
    per_draw = [halves(f) for f in folders]
    picks = [chosen(f) for f in folders]
    keys = sorted(set.intersection(*(set(d) for d in per_draw)),
                  key=lambda k: (k[0], [float(x) for x in re.findall(r"[0-9.]+", k[1])][::-1]))
    lines = [f"Reward − base on the tuning split's warm and frank halves (vader_polar), mean over {len(folders)} draws "
             f"({', '.join(os.path.basename(f) for f in folders)}); 'chosen' counts the draws whose sweep chose it:",
             "", "| method | setting | warm half | frank half | both | chosen in |", "|---|---|---|---|---|---|"]
    for key in keys:
        warm = statistics.mean(d[key][0] for d in per_draw)
        frank = statistics.mean(d[key][1] for d in per_draw)
        count = sum(p[key[0]] == key[1] for p in picks)
        lines.append(f"| {key[0]} | {key[1]} | {warm:+.3f} | {frank:+.3f} | {(warm + frank) / 2:+.3f} | "
                     f"{count} of {len(folders)} |")
    save_table("\n".join(lines) + "\n", args.out, "`python scripts/polar_halves.py` (the tuning split only)")


if __name__ == "__main__":
    cli.main_guard(main)
