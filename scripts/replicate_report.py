"""Per-draw and pooled effects of scripts/replicate.sh: RE-Control and Static RE against base on the test split.

    python scripts/replicate_report.py --output_dir runs/replicate --out results/smollm2_135M_demo_replicate

Each draw folder (seed*) holds a base run, a RE-Control run and a Static RE run on the test split, scored by
stages 5-6, and the sweeps that chose their settings on the tuning split. Pooled: the per-prompt difference averaged
over the draws, its mean and standard error over prompts (the draws share the prompts, so they are not independent
samples of them).
"""
import glob
import math
import os
import shutil
import sys

# run as a file outside the repository root (python DIR/FILE.py): the root holds utils
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils import cli  # noqa: E402
from utils.io import atomic_path, load_json, load_reward_record, output_path, save_json  # noqa: E402
from utils.metrics import mean_and_se, paired_difference  # noqa: E402
from utils.sweep import describe  # noqa: E402

M, D = "smollm2_135M", "demo"
METHODS = {"RE-Control": ("RE-Control", "sweep"), "Static RE": ("static_re", "sweep_static_re")}


def parse_args(argv=None):
    parser = cli.make_parser(__doc__)
    parser.add_argument("--output_dir", type=str, default="runs/replicate", help="the folder replicate.sh wrote")
    parser.add_argument("--out", type=str, default="results/smollm2_135M_demo_replicate",
                        help="writes OUT.json and OUT.md")
    parser.add_argument("--demo_sweeps_to", type=str, default=None,
                        help="copy the first draw's sweep results (.json, .md, .png) into this folder: the demo's "
                             "draw, whose choices scripts/demo.sh reads")
    parser.add_argument("--min_diversity_ratio", type=float, default=0.9, help="target: diversity vs base")
    parser.add_argument("--min_coherence_ratio", type=float, default=0.95, help="target: coherence vs base")
    parser.add_argument("--min_se", type=float, default=2.0, help="target: paired difference in standard errors")
    return parser.parse_args(argv)


def scored_run(folder, run):
    return (load_reward_record(output_path(folder, "reward", run), "measure_reward.py"),
            load_json(output_path(folder, "evaluation", run), "metrics.py"))


def method_run(folder, method):
    """The test-split run of `method` ('RE-Control' or 'static_re') in a draw folder."""
    found = []
    for path in glob.glob(os.path.join(folder, "response", f"{M}_{D}_*.meta.json")):
        meta = load_json(path)
        if meta.get("method") == method and meta.get("split", "test") == "test" and not meta.get("prompting"):
            found.append(os.path.basename(path)[:-len(".meta.json")])
    if len(found) != 1:
        raise cli.UsageError(f"{folder}: expected one {method} run on the test split, found {found}; re-run "
                             f"scripts/replicate.sh")
    return found[0]


def main(argv=None):
    args = parse_args(argv)
    folders = sorted(glob.glob(os.path.join(args.output_dir, "seed*")), key=lambda f: int(f.rsplit("seed", 1)[1]))
    if not folders:
        raise cli.UsageError(f"no seed* folders under {args.output_dir}; run scripts/replicate.sh first")
    report = {"draws": [], "pooled": {}, "targets": {"min_se": args.min_se, "min_diversity_ratio":
              args.min_diversity_ratio, "min_coherence_ratio": args.min_coherence_ratio}}
    per_prompt = {name: [] for name in METHODS}
    for folder in folders:
        base_reward, base_eval = scored_run(folder, f"{M}_{D}_base")
        draw = {"draw": os.path.basename(folder), "base": {"average_reward": base_reward["average_reward"],
                "diversity": base_eval["diversity"], "coherence": base_eval["coherence"], "rep-4": base_eval["rep-4"]}}
        for name, (method, sweep) in METHODS.items():
            run = method_run(folder, method)
            reward, evaluation = scored_run(folder, run)
            diff, se = paired_difference(reward["rewards"], base_reward["rewards"])
            chosen = load_json(output_path(folder, "results", f"{M}_{D}_{sweep}"), "sweep.py")
            per_prompt[name].append([a - b for a, b in zip(reward["rewards"], base_reward["rewards"])])
            draw[name] = {"run": run, "setting": chosen["chosen"], "rule": chosen["rule"],
                          "average_reward": reward["average_reward"], "difference": diff, "se": se,
                          "se_ratio": diff / se if se else math.nan, "diversity": evaluation["diversity"],
                          "diversity_ratio": evaluation["diversity"] / base_eval["diversity"],
                          "coherence": evaluation["coherence"],
                          "coherence_ratio": evaluation["coherence"] / base_eval["coherence"],
                          "rep-4": evaluation["rep-4"], "count": reward["count"]}
            draw[name]["meets_target"] = (draw[name]["se_ratio"] > args.min_se
                                          and draw[name]["diversity_ratio"] >= args.min_diversity_ratio
                                          and draw[name]["coherence_ratio"] >= args.min_coherence_ratio)
        report["draws"].append(draw)
    for name in METHODS:
        averaged = [sum(values) / len(values) for values in zip(*per_prompt[name])]
        mean, se = mean_and_se(averaged)
        effects = [d[name]["difference"] for d in report["draws"]]
        report["pooled"][name] = {"difference": mean, "se": se, "se_ratio": mean / se if se else math.nan,
                                  "draw_sd": mean_and_se(effects)[1] * math.sqrt(len(effects))
                                  if len(effects) > 1 else math.nan,
                                  "draws_meeting_target": sum(d[name]["meets_target"] for d in report["draws"]),
                                  "diversity_ratio": sum(d[name]["diversity_ratio"] for d in report["draws"])
                                  / len(report["draws"]),
                                  "coherence_ratio": sum(d[name]["coherence_ratio"] for d in report["draws"])
                                  / len(report["draws"])}
    # ------------------------------------------------------------------------------------------------------ save
    lines = ["| draw | method | chosen on the tuning split | reward (test) | vs base (paired) | diversity | coherence "
             "| rep-4 | target met |", "|---|---|---|---|---|---|---|---|---|"]
    for draw in report["draws"]:
        base = draw["base"]
        lines.append(f"| {draw['draw']} | Base | — | {base['average_reward']:.4f} | — | {base['diversity']:.3f} | "
                     f"{base['coherence']:.3f} | {base['rep-4']:.2f} | — |")
        for name in METHODS:
            r = draw[name]
            lines.append(f"| {draw['draw']} | {name} | {describe(r['setting'], tuple(r['setting']))} "
                         f"({r['rule']} rule) | {r['average_reward']:.4f} | {r['difference']:+.4f} ± {r['se']:.4f} "
                         f"({r['se_ratio']:.1f} SE) | {r['diversity']:.3f} ({r['diversity_ratio']:.2f}x) | "
                         f"{r['coherence']:.3f} ({r['coherence_ratio']:.2f}x) | {r['rep-4']:.2f} | "
                         f"{'yes' if r['meets_target'] else 'no'} |")
    lines += ["", "| pooled over draws | vs base (paired, per-prompt mean over draws) | SD of the draws' effects | "
              "diversity | coherence | draws meeting the target |", "|---|---|---|---|---|---|"]
    for name, p in report["pooled"].items():
        lines.append(f"| {name} | {p['difference']:+.4f} ± {p['se']:.4f} ({p['se_ratio']:.1f} SE) | "
                     f"{p['draw_sd']:.4f} | {p['diversity_ratio']:.2f}x | {p['coherence_ratio']:.2f}x | "
                     f"{p['draws_meeting_target']} of {len(report['draws'])} |")
    count = report["draws"][0]["RE-Control"]["count"]
    lines += ["", f"Test split: {count} prompts, never used for a choice. Target per draw: paired difference > "
              f"{args.min_se:g} SE, diversity >= {args.min_diversity_ratio}x and coherence >= "
              f"{args.min_coherence_ratio}x base. Produced by `bash scripts/replicate.sh`."]
    table = "\n".join(lines) + "\n"
    save_json(report, args.out + ".json")
    with atomic_path(args.out + ".md") as tmp:
        with open(tmp, "w") as f:
            f.write(table)
    if args.demo_sweeps_to:
        for sweep in ("sweep", "sweep_static_re"):
            for ext in ("json", "md", "png"):
                source = output_path(folders[0], "results", f"{M}_{D}_{sweep}", ext)
                shutil.copyfile(source, os.path.join(args.demo_sweeps_to, os.path.basename(source)))
    print(table + f"-> {args.out}.json, {args.out}.md")


if __name__ == "__main__":
    cli.main_guard(main)
