"""The replicate's report, from the committed per-prompt files alone (scripts/replicate.sh exports them).

    python scripts/replicate_report.py --per_prompt results/per_prompt/replicate \\
        --out results/smollm2_135M_demo_replicate

Each draw folder (seed*) holds the per-prompt files of base, RE-Control and Static RE on the test split
(utils/results.py; Prompting's and a refit RE-Control's too where every draw has them) and the sweeps that chose
their settings on the tuning split. Reported:
- per draw, each paired difference with its conditional SE (over prompts, the draw's value model held fixed), on all
  test prompts, on test-0101..0250 alone (the prompts no choice ever touched, history included), and under the
  held-out scorer;
- over draws, the draws as units: mean of the K draws' effects ± SD/sqrt(K), the t(K-1) 95 % interval and its
  two-sided p, and a two-stage bootstrap (draws, then prompts) 95 % interval; a comparison that is the same in every
  draw (Prompting - Base: greedy, no value model) has no variance between draws, and its prompts are the units.
"""
import glob
import os
import re
import sys

# run as a file outside the repository root (python DIR/FILE.py): the root holds utils
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils import cli  # noqa: E402
from utils.decoding import get_method  # noqa: E402
from utils.io import atomic_path, load_json, save_json  # noqa: E402
from utils.metrics import mean_and_se  # noqa: E402
from utils.results import load_per_prompt, over_draws, two_stage_bootstrap  # noqa: E402
from utils.sweep import describe, paired_text  # noqa: E402

METHODS = {"base": "Base", "re_control": "RE-Control", "static_re": "Static RE", "prompting": "Prompting"}
REQUIRED = ("base", "re_control", "static_re")  # the others are reported where every draw has them
COMPARISONS = (("re_control", "base"), ("static_re", "base"), ("re_control", "static_re"), ("prompting", "base"),
               ("re_control", "prompting"))
REFIT = re.compile(r"_r\d+_ra[^_]+_rn\d+$")  # a refit value model's name (stage 3 --rounds)
MARGIN = re.compile(r"_pm[^_]+(_|$)")  # a value model trained with the margin loss (stage 3 --margin_weight)
FIRST_UNTOUCHED = 101  # test-0001..0100 were the test split when the first settings were chosen


def parse_args(argv=None):
    parser = cli.make_parser(__doc__)
    parser.add_argument("--per_prompt", type=str, default="results/per_prompt/replicate",
                        help="the folder of seed* folders of per-prompt files")
    parser.add_argument("--out", type=str, default="results/smollm2_135M_demo_replicate",
                        help="writes OUT.json and OUT.md")
    parser.add_argument("--first_untouched", type=int, default=FIRST_UNTOUCHED,
                        help="the first test prompt no choice was ever made on (the demo: 101; a new task: 1)")
    parser.add_argument("--group_by", type=str, default=None,
                        help="also report each comparison on the test prompts of each value of this field of the "
                             "data set's records (e.g. polarity for demo_polar)")
    return parser.parse_args(argv)


def untouched(ids, first=FIRST_UNTOUCHED):
    """The ids of test-{first}.. on: test prompts that no choice was ever made on."""
    return {i for i in ids if i and i.startswith("test-") and int(i.split("-")[1]) >= first}


def groups_of(run, field):
    """{value: set of ids} of the test prompts by a field of the data set's records."""
    from utils.data import load_records
    groups = {}
    for record in load_records(run.settings.get("dataset_name", "demo"), "test"):
        groups.setdefault(str(record.get(field)), set()).add(record.get("id"))
    return groups


def draw_runs(folder):
    """{method: PerPrompt} of a draw's test-split runs (one each; the alignment-prompt variants are not read)."""
    runs = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        record = load_per_prompt(path)
        if (record.split != "test" or record.method not in METHODS
                or (record.settings.get("prompting") and record.method != "prompting")):
            continue
        key = option_key(record) if record.method == "re_control" else record.method
        if key in runs:
            raise cli.UsageError(f"{folder}: two {key} runs on the test split ({runs[key].run}, {record.run}); "
                                 f"keep one")
        runs[key] = record
    missing = [m for m in REQUIRED if m not in runs]
    if missing:
        raise cli.UsageError(f"{folder}: no {', '.join(missing)} run on the test split; re-run scripts/replicate.sh")
    return runs


def option_key(run):
    """'re_control', or for RE-Control with issue 20's options e.g. 're_control_refit_entropy_gate', whose label
    (METHODS) is 'RE-Control (refit + entropy gate)'."""
    parts = [(key, name) for key, name, found in (
        ("refit", "refit", REFIT.search(run.value_model_file or "")),
        ("margin", "margin loss", MARGIN.search(os.path.basename(run.value_model_file or ""))),
        (f"{run.settings.get('option_gate')}_gate", f"{run.settings.get('option_gate')} gate",
         run.settings.get("option_gate"))) if found]
    if not parts:
        return "re_control"
    key = "re_control_" + "_".join(k for k, _ in parts)
    METHODS[key] = f"RE-Control ({' + '.join(n for _, n in parts)})"
    return key


def comparisons(methods):
    """COMPARISONS, then each RE-Control option against base, plain RE-Control, Static RE and Prompting."""
    options = [m for m in methods if m.startswith("re_control_")]
    return COMPARISONS + tuple((o, other) for o in options for other in ("base", "re_control", "static_re",
                                                                          "prompting"))


def chosen_for(folder, run):
    """The sweep that chose the run's setting (a sweep for the run's own value model where the folder has one, else
    the file --settings_from named), and whether it chose it for the run's own value model (sha256)."""
    sweep_file = run.settings.get("settings_from")
    if not sweep_file:
        return {}, False
    sweeps = [load_json(path) for path in sorted(glob.glob(os.path.join(folder, "sweeps", "*.json")))]
    own = [s for s in sweeps if run.value_model_sha256 and s.get("value_model_sha256") == run.value_model_sha256]
    sweep = own[0] if own else load_json(os.path.join(folder, "sweeps", os.path.basename(sweep_file)))
    return sweep, sweep.get("value_model_sha256") == run.value_model_sha256


def setting_text(run):
    """'alpha 3, n 10' or 'strength 1': the run's tuned options, as the sweep tables write them."""
    tuned = get_method(run.method).tuned
    return describe({k: run.settings[f"option_{k}"] for k in tuned}, tuned) if tuned else "—"


def differences(a, b, ids=None, column=None):
    column = column or a.reward_model
    return [x - y for x, y in zip(a.column(column, ids), b.column(column, ids))]


def main(argv=None):
    args = parse_args(argv)
    folders = sorted(glob.glob(os.path.join(args.per_prompt, "seed*")), key=lambda f: int(f.rsplit("seed", 1)[1]))
    if not folders:
        raise cli.UsageError(f"no seed* folders under {args.per_prompt}; run scripts/replicate.sh first")
    draws, diffs = [], {}
    every_draw = set.intersection(*(set(draw_runs(folder)) for folder in folders))
    for folder in folders:
        runs = {method: run for method, run in draw_runs(folder).items() if method in every_draw}
        base = runs["base"]
        ids = base.ids()
        if any(r.ids() != ids for r in runs.values()):
            raise cli.UsageError(f"{folder}: the runs answer different prompts; re-run scripts/replicate.sh")
        fresh = untouched(ids, args.first_untouched)
        groups = groups_of(base, args.group_by) if args.group_by else {}
        draw = {"draw": os.path.basename(folder), "num_prompts": len(ids), "num_untouched": len(fresh),
                "reward_model": base.reward_model, "heldout_reward_model": base.heldout_reward_model,
                "methods": {}, "comparisons": {}}
        for method, run in runs.items():
            sweep, own = chosen_for(folder, run) if method != "base" else ({}, None)
            draw["methods"][method] = {
                "run": run.run, "setting": setting_text(run), "value_model_sha256": run.value_model_sha256,
                "value_model_tune_loss": run.value_model_tune_loss, "chosen_for_this_value_model": own,
                "sweep_rule": sweep.get("rule"), "average_reward": mean_and_se(run.column(run.reward_model))[0],
                "diversity": sum(run.column("diversity")) / len(ids),
                "coherence": sum(run.column("coherence")) / len(ids)}
        for a, b in (pair for pair in comparisons(runs) if set(pair) <= set(runs)):
            key = f"{a}-{b}"
            entry = {}
            subsets = ([("all", None)] + ([("untouched", fresh)] if fresh != set(ids) else [])  # else: all again
                       + [(f"{args.group_by}={g}", members & set(ids)) for g, members in sorted(groups.items())])
            for subset, chosen in subsets:
                values = differences(runs[a], runs[b], chosen)
                entry[subset] = dict(zip(("difference", "se"), mean_and_se(values)))
                diffs.setdefault((key, subset), []).append(values)
            if base.heldout_reward_model:
                values = differences(runs[a], runs[b], column=base.heldout_reward_model)
                entry["heldout"] = dict(zip(("difference", "se"), mean_and_se(values)))
                diffs.setdefault((key, "heldout"), []).append(values)
            entry["diversity_ratio"] = draw["methods"][a]["diversity"] / draw["methods"][b]["diversity"]
            entry["coherence_ratio"] = draw["methods"][a]["coherence"] / draw["methods"][b]["coherence"]
            draw["comparisons"][key] = entry
        draws.append(draw)
    pooled = {}
    for (key, subset), per_draw in diffs.items():
        effects = [sum(v) / len(v) for v in per_draw]
        if all(v == per_draw[0] for v in per_draw):  # greedy without a value model on both sides (Prompting - Base):
            stats = over_draws(per_draw[0])          # no variance between draws, so the prompts are the units
            stats.update(bootstrap=two_stage_bootstrap(per_draw[:1]), identical_draws=len(per_draw))
        else:
            stats = over_draws(effects)
            stats["bootstrap"] = two_stage_bootstrap(per_draw)
        stats["draws_above_zero"] = sum(e > 0 for e in effects)
        pooled.setdefault(key, {})[subset] = stats
    report = {"draws": draws, "over_draws": pooled, "first_untouched_prompt": f"test-{args.first_untouched:04d}"}
    table = markdown(report, args.per_prompt)
    save_json(report, args.out + ".json")
    with atomic_path(args.out + ".md") as tmp:
        with open(tmp, "w") as f:
            f.write(table)
    print(table + f"-> {args.out}.json, {args.out}.md")


def pm(entry):
    return paired_text(entry["difference"], entry["se"])


def label(key):
    a, b = key.split("-")
    return f"{METHODS[a]} − {METHODS[b]}"


def markdown(report, per_prompt="results/per_prompt/replicate"):
    draws = report["draws"]
    first = draws[0]
    k, n, fresh = len(draws), first["num_prompts"], first["num_untouched"]
    heldout = first["heldout_reward_model"]
    first_untouched = int(report["first_untouched_prompt"].split("-")[1])
    span = f"test-{first_untouched:04d}..{first_untouched + fresh - 1:04d}"
    subset_column = any("untouched" in c for c in first["comparisons"].values())  # main() left it out if all
    lines = [f"Per draw (conditional: each draw's value model held fixed; SE over the {n} test prompts):", "",
             f"| draw | comparison | settings (chosen on the tuning split) | {first['reward_model']}, all {n} "
             f"prompts | " + (f"{first['reward_model']}, {span} ({fresh}) | " if subset_column else "")
             + f"held-out {heldout}, all {n} | diversity | coherence |",
             "|---|---|---|---|---|---|---|" + ("---|" if subset_column else "")]
    for draw in draws:
        methods = draw["methods"]
        for key, c in draw["comparisons"].items():
            a, b = key.split("-")
            settings = " vs ".join(METHODS[m] + ("" if methods[m]["setting"] == "—" else f" {methods[m]['setting']}")
                                   for m in (a, b) if m != "base") or "—"
            lines.append(f"| {draw['draw']} | {label(key)} | {settings} | {pm(c['all'])} | "
                         + (f"{pm(c['untouched'])} | " if subset_column else "")
                         + f"{pm(c['heldout']) if 'heldout' in c else '—'} | {c['diversity_ratio']:.2f}x | "
                         f"{c['coherence_ratio']:.2f}x |")
    lines += ["", f"Over the {k} draws (the draws as units: mean of the draws' effects ± SD/√{k}, Student's t with "
              f"{k - 1} df):", "",
              "| comparison | prompts | mean over draws | t 95 % interval | p (two-sided) | two-stage bootstrap 95 % | "
              "draws above 0 |", "|---|---|---|---|---|---|---|"]
    names = {"all": f"all {n} ({first['reward_model']})", "untouched": f"{span} ({first['reward_model']})",
             "heldout": f"all {n} (held-out {heldout})"}
    for key, subsets in report["over_draws"].items():
        for subset, s in subsets.items():
            low, high = s["bootstrap"]
            name = names.get(subset) or f"{subset} ({first['reward_model']})"
            above = (f"the same in all {s['identical_draws']} (SE, t and bootstrap over the {s['k']} prompts)"
                     if "identical_draws" in s else f"{s['draws_above_zero']} of {s['k']}")
            lines.append(f"| {label(key)} | {name} | {s['mean']:+.4f} ± {s['se']:.4f} | "
                         f"[{s['low']:+.4f}, {s['high']:+.4f}] | {s['p']:.3f} | [{low:+.4f}, {high:+.4f}] | "
                         f"{above} |")
    lines += ["", "Value models and the sweeps that chose for them:", "",
              "| draw | value model sha256 | tune loss | RE-Control's setting chosen for it | Static RE's (its probe "
              "reads the stage-1 features) |",
              "|---|---|---|---|---|"]
    for draw in draws:
        rc, st = draw["methods"]["re_control"], draw["methods"]["static_re"]
        loss = rc["value_model_tune_loss"]
        lines.append(f"| {draw['draw']} | {(rc['value_model_sha256'] or '?')[:12]} | "
                     f"{'—' if loss is None else f'{loss:.4f}'} | "
                     f"{'yes' if rc['chosen_for_this_value_model'] else 'no'} ({rc['sweep_rule']} rule) | "
                     + (f"{'yes' if st['chosen_for_this_value_model'] else 'no'} ({st['sweep_rule']} rule) |"
                        if st["value_model_sha256"] else f"no value model read ({st['sweep_rule']} rule) |"))
    if first_untouched == FIRST_UNTOUCHED:
        lines += ["", "Every figure is recomputed from the per-prompt files under results/per_prompt/replicate by "
                  "`python scripts/replicate_report.py`; they come from `bash scripts/replicate.sh`. The settings "
                  "were chosen on the tuning split (100 prompts); test-0001..0100 were the test split when the value "
                  "model's learning rate was first chosen (docs/results.md, 'What was chosen on which prompts'), so "
                  "test-0101..0250 is the set no choice ever touched."]
    else:
        lines += ["", f"Every figure is recomputed from the per-prompt files under {per_prompt} by `python "
                  f"scripts/replicate_report.py`. The settings were chosen on the tuning split; no choice was made on "
                  f"the test split ({span})."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    cli.main_guard(main)
