"""Committed per-prompt results, and the statistics every reported figure is recomputed from.

A run folder's scored runs (stage 4's responses, stage 5's rewards, stage 6's per-response rows) become one compact
file per run under results/per_prompt/ (export_folder): the prompt ids, the reward under each scorer, length, rep-n,
diversity and coherence per prompt, the run's settings and the value model's fingerprint. The reports (for example
scripts/replicate_report.py) read only these files, so any paired figure can be checked without running anything.
"""
import glob
import math
import os

from utils.data import conversation_text, load_records, record_turns
from utils.errors import UsageError
from utils.io import load_json, output_path, read_json_or_none, response_path, save_json, sidecar_path
from utils.metrics import mean_and_se

PER_PROMPT_FIELDS = ("length", "rep-2", "rep-3", "rep-4", "diversity", "coherence")
DIGITS = 6  # per-prompt values are stored rounded; every figure is computed from the stored values


def prompt_ids(dataset_name, split, conversations):
    """The data set's id of each answered prompt (matched by its dialogue; the row number where records have none)."""
    try:
        records = load_records(dataset_name, split)
    except UsageError:
        return [None] * len(conversations)
    by_text = {}
    for number, record in enumerate(records):
        by_text.setdefault(conversation_text(record_turns(record)), record.get("id", f"{split}-{number + 1:04d}"))
    return [by_text.get(c) for c in conversations]


def export_run(root, run):
    """The per-prompt record of one scored run in `root` (a dict, see the module docstring)."""
    responses = load_json(response_path(root, run))
    meta = read_json_or_none(sidecar_path(response_path(root, run))) or {}
    reward = load_json(output_path(root, "reward", run))
    evaluation = load_json(output_path(root, "evaluation", run))
    settings = meta.get("settings") or {}
    split = settings.get("split", "test")
    scorers = {reward["reward_model"]: reward["rewards"]}
    if reward.get("heldout"):
        scorers[reward["heldout"]["reward_model"]] = reward["heldout"]["rewards"]
    ids = prompt_ids(settings.get("dataset_name", "demo"), split, [r.get("conversation", r["prompt"])
                                                                  for r in responses])
    columns = ["id", *scorers, *PER_PROMPT_FIELDS]
    rows = [[ids[i], *(round(s[i], DIGITS) for s in scorers.values()),
             *(round(evaluation["rows"][i][k], DIGITS) for k in PER_PROMPT_FIELDS)] for i in range(len(responses))]
    value_model = meta.get("value_model") or {}
    return {"run": run, "method": meta.get("method"), "label": meta.get("label"), "split": split,
            "reward_model": reward["reward_model"],
            "heldout_reward_model": (reward.get("heldout") or {}).get("reward_model"),
            "value_model_file": settings.get("value_model_file"),
            "value_model_sha256": settings.get("value_model_sha256"),
            "value_model_tune_loss": value_model.get("test_loss"),
            "settings": settings, "columns": columns, "rows": rows}


def scored_runs(root):
    """The runs of `root` scored by stages 5 and 6."""
    runs = sorted(os.path.basename(p)[:-len(".json")] for p in glob.glob(output_path(root, "reward", "*"))
                  if not p.endswith(".meta.json"))
    return [run for run in runs if os.path.exists(output_path(root, "evaluation", run))]


def export_folder(root, to):
    """Every scored run of `root` as to/{run}.json; returns the paths written."""
    runs = scored_runs(root)
    if not runs:
        raise UsageError(f"no run under {root} is scored by measure_reward.py and metrics.py; nothing to export")
    written = []
    for run in runs:
        path = os.path.join(to, f"{run}.json")
        save_json(export_run(root, run), path)
        written.append(path)
    return written


class PerPrompt:
    """One committed per-prompt file: column access by name, and the rows of some prompts only."""

    def __init__(self, path):
        self.path = path
        self.record = load_json(path)
        self.columns = self.record["columns"]
        self.rows = self.record["rows"]

    def __getattr__(self, name):
        if name in ("record", "path", "columns", "rows"):
            raise AttributeError(name)
        return self.record[name]

    def column(self, name, ids=None):
        """The values of one column, in prompt order (only the prompts in `ids`, if given)."""
        i = self.columns.index(name)
        return [row[i] for row in self.rows if ids is None or row[0] in ids]

    def ids(self):
        return self.column("id")


def load_per_prompt(path):
    if not os.path.exists(path):
        raise UsageError(f"{path} not found: export the run first (scripts/export_per_prompt.py)")
    return PerPrompt(path)


def over_draws(effects):
    """Draws as the units: mean of the K draws' effects, SD/sqrt(K), the t(K-1) 95 % interval and two-sided p."""
    from scipy.stats import t
    k = len(effects)
    mean, se = mean_and_se(effects)
    if k < 2 or not se:
        return {"k": k, "mean": mean, "se": se, "low": math.nan, "high": math.nan, "p": math.nan}
    half = float(t.ppf(0.975, k - 1)) * se
    return {"k": k, "mean": mean, "se": se, "sd": se * math.sqrt(k), "low": mean - half, "high": mean + half,
            "p": float(2 * t.sf(abs(mean / se), k - 1))}


def two_stage_bootstrap(differences, repeats=4000, seed=0):
    """95 % percentile interval of the mean effect when draws, then prompts within each draw, are resampled.

    differences: one list of per-prompt differences per draw (numpy's generator, so the interval is reproducible)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    data = np.asarray(differences, dtype=float)  # [K draws, P prompts]
    k, n = data.shape
    draws = rng.integers(0, k, size=(repeats, k))
    prompts = rng.integers(0, n, size=(repeats, k, n))
    means = data[draws[:, :, None], prompts].mean(axis=(1, 2))
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high)
