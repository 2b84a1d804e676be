"""The results table: one row per run, in the layout of the paper's Table 1 (make_table.py, compare_methods.py,
report_html.py). Each row's name comes from the decoding-method registry (utils.decoding)."""
import glob
import os

from utils.decoding import methods
from utils.errors import UsageError
from utils.io import (
    atomic_path,
    load_json,
    load_reward_record,
    new_figure,
    output_path,
    response_path,
    save_csv,
    save_figure,
    sidecar_path,
)
from utils.metrics import paired_difference
from utils.sweep import paired_text

COLUMNS = ["method", "run", "split", "diversity", "coherence", "average reward", "reward SE", "vs base", "vs base SE",
           "held-out scorer", "held-out reward", "held-out vs base", "held-out vs base SE", "win rate %", "time (s)"]


def optional(path):
    return load_json(path) if os.path.exists(path) else None


LEGACY_METHODS = {"RE-Control": "re_control"}  # what .meta.json said before the registry


def method_name(meta):
    """The row's name, from the registry's method (its row_label: RE-Control shows alpha and n); a fine-tuned
    policy's (stage 4 with --adapter) is '{method} (LoRA)', its RE-Control row '{method} (LoRA) + RE-Control (...)'."""
    if not meta:
        return "?"
    adapter = meta.get("adapter")
    tuned = f"{adapter.get('method_name') or os.path.basename(adapter['path'])} (LoRA)" if adapter else None
    key = LEGACY_METHODS.get(meta.get("method"), meta.get("method"))
    method = methods().get(key)
    if method is None:
        name = meta.get("label") or str(key)
    else:
        name = method.row_label(meta)  # the run's options are recorded at the top level
        if meta.get("prompting") and not method.prompting:
            name = "Prompting" if key == "base" else f"{name} + Prompting"
    if tuned:
        name = tuned if key == "base" and not meta.get("prompting") else f"{tuned} + {name}"
    return name


def gather(root, prefix, base_name, runs=None):
    """One row per scored run named {prefix}* (or per run of `runs`, in that order)."""
    runs = runs or sorted(os.path.basename(p)[:-5] for p in
                          glob.glob(output_path(root, "reward", prefix + "*"))
                          if not p.endswith(".meta.json"))
    if not runs:
        raise UsageError(f"no scored runs {prefix}* under {root}/final_reward; run measure_reward.py first")
    base = optional(output_path(root, "reward", base_name))
    base_meta = optional(sidecar_path(response_path(root, base_name))) or {}
    if base_meta.get("split"):  # a sweep's runs on its tuning split are not rows of the test table
        runs = [run for run in runs if (optional(sidecar_path(response_path(root, run))) or {}).get(
            "split", base_meta["split"]) == base_meta["split"]]
    rows = []
    for run in runs:
        reward = load_reward_record(output_path(root, "reward", run), "measure_reward.py")
        evaluation = optional(output_path(root, "evaluation", run)) or {}
        meta = optional(sidecar_path(response_path(root, run)))
        judgments = [load_json(p) for p in glob.glob(output_path(root, "judgment", f"{run}_*"))
                     if not p.endswith(".meta.json")]
        diff, heldout_diff = (None, None), (None, None)
        heldout, base_heldout = reward.get("heldout") or {}, (base or {}).get("heldout") or {}
        if base and run != base_name and len(base["rewards"]) == len(reward["rewards"]):
            diff = paired_difference(reward["rewards"], base["rewards"])
            if heldout and base_heldout.get("reward_model") == heldout["reward_model"]:
                heldout_diff = paired_difference(heldout["rewards"], base_heldout["rewards"])
        rows.append({"method": method_name(meta), "run": run, "split": (meta or {}).get("split"),
                     "diversity": evaluation.get("diversity"),
                     "coherence": evaluation.get("coherence"), "average reward": reward["average_reward"],
                     "reward SE": reward["standard_error"], "vs base": diff[0], "vs base SE": diff[1],
                     "win rate %": judgments[0]["win_rate"] if judgments else None,
                     "time (s)": meta.get("seconds") if meta else None, "rewards": reward["rewards"],
                     "value model": (meta or {}).get("value_model"),
                     "settings from": ((meta or {}).get("args") or {}).get("settings_from"),
                     "chosen for this value model": ((meta or {}).get("settings") or {}).get(
                         "settings_chosen_for_this_value_model"),
                     "held-out scorer": heldout.get("reward_model"), "held-out reward": heldout.get("average_reward"),
                     "held-out vs base": heldout_diff[0], "held-out vs base SE": heldout_diff[1]})
    rows.sort(key=lambda r: (r["run"] != base_name, runs.index(r["run"])))
    return rows


def notes(rows, dataset_name=None):
    lines = []
    if not any(r["win rate %"] is not None for r in rows):
        lines.append("Win rate: the judge was skipped (set OPENAI_API_KEY or pass --base_url to gpt4_eval.py).")
    for r in rows:
        if r["settings from"]:
            sweep = optional(r["settings from"]) or {}
            lines.append(f"{r['method']}: the setting was chosen by the {sweep.get('rule', '?')} rule on the "
                         f"'{sweep.get('split', '?')}' split ({sweep.get('num_prompts', '?')} prompts), not on the "
                         f"prompts of this table: {r['settings from']}"
                         + (", chosen for another value model than this run's." if r.get("chosen for this value model")
                            is False else "."))
        vm = r["value model"]
        if vm and vm.get("dataset") and dataset_name and vm["dataset"] != dataset_name:
            lines.append(f"{r['method']}: the value model was trained on {vm['dataset']}'s prompts and is applied "
                         f"here to {dataset_name}'s: out of distribution.")
        if vm and "test_loss" in vm:
            split = (vm.get("settings") or {}).get("eval_split", "test")
            lines.append(f"{r['method']}: value model {vm['num_layers']} layers x {vm['hidden_dim']}, loss on the "
                         f"{split} split "
                         f"{vm['test_loss']:.4f} (terminal part {vm.get('test_terminal_loss', float('nan')):.4f}; "
                         f"predicting the mean reward: {vm.get('baseline_terminal_loss', float('nan')):.4f}).")
    scorers = {r.get("held-out scorer") for r in rows} - {None}
    if scorers:
        lines.append(f"Held-out: the paired difference under {', '.join(sorted(scorers))}, a scorer no stage trained "
                     f"on and no choice was made by (measure_reward.py --heldout_reward_model).")
    return "\n".join(lines)


def write_table(rows, stem, note):
    """stem.md (printed too) and stem.csv."""
    table = markdown(rows, note)
    with atomic_path(stem + ".md") as tmp:
        with open(tmp, "w") as f:
            f.write(table)
    save_csv(rows, stem + ".csv", COLUMNS)
    print("\n" + table)


def markdown(rows, judge_note):
    def cell(row, key):
        value = row[key]
        if value is None:
            return "skipped" if key == "win rate %" else "—"
        if key == "average reward":
            return f"{value:.4f} ± {row['reward SE']:.4f}"
        if key in ("vs base", "held-out vs base"):
            return paired_text(value, row[key + " SE"])
        if key == "time (s)":
            return f"{value:.1f}"
        return f"{value:.3f}" if isinstance(value, float) else str(value)
    keys = ["method", "split", "diversity", "coherence", "average reward", "vs base", "win rate %", "time (s)"]
    if any(r.get("held-out scorer") for r in rows):
        keys.insert(6, "held-out vs base")
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(r, k) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + ("\n\n" + judge_note if judge_note else "") + "\n"


def plot_rewards(rows, path):
    fig, ax = new_figure(figsize=(7, 0.9 + 0.7 * len(rows)))
    ax.violinplot([r["rewards"] for r in rows], orientation="horizontal", showmeans=True)
    ax.set_yticks(range(1, len(rows) + 1), [r["method"] for r in rows])
    ax.set_xlabel("reward")
    ax.set_title("reward per test prompt")
    save_figure(fig, path)
