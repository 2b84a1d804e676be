"""Choose RE-Control's step size alpha and number of updates n (or Static RE's strength) on a tuning split.

The embedded offline default (the demo's tuning split: 100 prompts that no test figure uses):
    python sweep.py --model_name smollm2_135M --dataset_name demo --split tune --value_lr 0.001 \\
        --step_sizes 1,2,3,4,6 --num_updates 10,20 --max_new_tokens 40 --batch_size 50 --embedding_model minilm \\
        --output_dir runs/demo
    python sweep.py --method static_re --strengths 1,2,4,6,8,12 --value_lr 0.001 --split tune --max_new_tokens 40 \\
        --batch_size 50 --embedding_model minilm --output_dir runs/demo

Loads the LLM once, answers the split without an edit (base) and at every cell of the grid (stage 4), scores each
run as stages 5-6 do (reward, diversity, coherence, rep-n) and picks a cell by the paper's rule (highest
coherence + diversity + average reward) and by the constrained rule (highest reward with diversity >= 0.9x and
coherence >= 0.95x base). --rule says which one is "chosen". Writes results/{m}_{d}_sweep.json, .csv, .md and .png
(other methods: results/{m}_{d}_sweep_{method}.*). Each cell runs through stages 4-6 (their files under response/,
final_reward/ and evaluations/ as {m}_{d}_{split}_...), so a cell resumes and shards as they do, and running the
same command again skips the finished cells. On the HF engine every cell reuses each prompt batch's prefill (the
forward pass over the prompt, which no edit changes): a cell costs about a quarter less, token for token the same
(utils/prefill.py, --prefill_memory_gb). Any registered method can be swept over its options:
    python sweep.py --method best_of_n --grid num_candidates=2,4,8 --split tune
Stage 4 and the comparison methods read the chosen setting:
    python inference_intervention.py --use_intervention True --value_lr 0.001 \\
        --settings_from runs/demo/results/smollm2_135M_demo_sweep.json
"""
import contextlib
import itertools
from dataclasses import dataclass
from typing import Optional

from utils import cli
from utils.config import build, config_fields, float_list, nonnegative_float, option, positive_int
from utils.configs import DecodeConfig, MeasureRewardConfig, MetricsConfig
from utils.decoding import Resources, get_method, methods, option_classes, options_from
from utils.engines import open_engine
from utils.errors import UsageError
from utils.io import atomic_path, load_json, output_path, output_stem, save_csv, save_json, write_sidecar
from utils.metrics import SIMCSE_MODEL, load_encoder
from utils.models import load_policy_tokenizer, resolve_model
from utils.names import model_tag, named_dataset, sweep_name, sweep_prefix
from utils.rewards import load_reward_model
from utils.stages.stage4_inference import plan_run, run_decode
from utils.stages.stage5_reward import run_measure_reward
from utils.stages.stage6_metrics import run_metrics
from utils.sweep import RULES, choose, describe, grid_table, paper_score, plot_grid
from utils.value_model import value_model_fingerprint


@dataclass(frozen=True)
class SweepOptions:
    split: str = option("tune", "split to answer: a tuning split, never the one the reported figures come from",
                        group="sweep")
    step_sizes: tuple = option((0.5, 1.0, 2.0, 4.0, 8.0), "re_control: comma-separated step sizes alpha",
                              parse=float_list, group="sweep")
    num_updates: tuple = option((10, 20), "re_control: comma-separated numbers of updates n", parse=cli.int_list,
                               group="sweep")
    strengths: tuple = option((1.0, 2.0, 4.0, 8.0), "static_re: comma-separated lengths of the control vector",
                             parse=float_list, group="sweep")
    grid: Optional[tuple] = option(None, "any method: OPTION=V1,V2,... (repeat the flag for more options), e.g. "
                                  "--grid num_candidates=2,4,8; replaces the method's list flag above",
                                  parse=str, group="sweep", repeat=True)
    rule: str = option("paper", "which rule's cell is 'chosen' (what --settings_from reads): the paper's maximum of "
                       "coherence + diversity + reward, or the highest reward within the ratio limits",
                       choices=RULES, group="sweep")
    min_diversity_ratio: float = option(0.9, "constrained rule: diversity at least this times base's",
                                        parse=nonnegative_float, group="sweep")
    min_coherence_ratio: float = option(0.95, "constrained rule: coherence at least this times base's",
                                        parse=nonnegative_float, group="sweep")
    reward_batch_size: int = option(32, "texts per reward-model batch", parse=positive_int, group="sweep")
    embedding_model: str = option(SIMCSE_MODEL, "coherence encoder (as in stage 6); offline: 'minilm'",
                                  group="sweep")
    prefill_memory_gb: float = option(2.0, "HF engine: memory (GB, on the model's device) for keeping each prompt "
                                      "batch's prefill, done once and reused by every cell with the same tokens "
                                      "(utils/prefill.py); 0 turns it off", parse=nonnegative_float, group="sweep")
    name: Optional[str] = option(None, "result name under results/ (default {m}_{d}_sweep, or "
                                 "{m}_{d}_sweep_{method})", group="sweep")


def build_parser():
    tuned = {name for method in methods().values() for name in method.tuned}  # given by the grid flags
    parser = cli.build_parser(__doc__, SweepOptions, DecodeConfig, *option_classes(),
                              exclude=("method", "prompting", "settings_from",
                                       *(tuned - set(config_fields(SweepOptions)))))
    parser.add_argument("--method", type=str, default="re_control", choices=list(methods()),
                        help="the method whose options are swept (utils.decoding registry)")
    return parser


def parse_args(argv=None):
    values = cli.parse(build_parser(), argv)
    values["grid"] = tuple(values["grid"] or ())
    return values


def grid_of(method, values):
    """{option: [values]} in the grid's order (the method's tuned options first, outermost first)."""
    grid = {name: values[flag] for name, flag in method.sweep_flags.items()}
    grid = {name: grid[name] for name in method.tuned if name in grid}
    for item in values["grid"]:
        name, _, listed = item.partition("=")
        if name not in {f for f in method.Options.__dataclass_fields__}:
            raise UsageError(f"--grid {item}: {method.name} has no option {name!r}; its options: "
                             f"{', '.join(method.Options.__dataclass_fields__) or 'none'}")
        kind = type(getattr(method.Options(), name) or 0.0)
        try:
            grid[name] = [kind(v) for v in listed.split(",") if v.strip()]
        except ValueError:
            raise UsageError(f"--grid {item}: the values of {name} must be {kind.__name__}s")
        if not grid[name]:
            raise UsageError(f"--grid {item}: give at least one value")
    missing = [name for name in method.tuned if name not in grid]
    if missing or not grid:
        raise UsageError(f"--method {method.name}: give the values of {', '.join(missing) or 'an option'} to try "
                         f"with --grid OPTION=V1,V2")
    return grid


def main(argv=None):
    values = parse_args(argv)
    if values["split"] == "test":
        raise UsageError("sweep.py chooses settings: run it on a tuning split (--split tune), never on the test "
                         "split the reported figures come from")
    method = get_method(values["method"])
    grid = grid_of(method, values)
    config = build(DecodeConfig, values, method=method.name)
    cli.setup(config)
    m, d = model_tag(config.model_name), named_dataset(config)
    stem = output_stem(config.output_dir, "results", values["name"] or sweep_name(m, d, method.name))
    # base reads no value model: its settings name none, so one base run serves the sweeps of every value model
    base_config = build(DecodeConfig, values, method="base", value_model=None)
    cells = [dict(zip(grid, combination)) for combination in itertools.product(*grid.values())]
    prefix = sweep_prefix(m, d, config.split)
    plans = [plan_run(base_config, None, prefix)] + [plan_run(config, options_from(method, values, **cell), prefix)
                                                     for cell in cells]
    value_model = plans[-1].value_model_stem
    # ------------------------------------------------------------------------------------------------------ load
    spec = resolve_model(config.model_name, config.chat_template, config.adapter)
    tokenizer = load_policy_tokenizer(spec, config.trust_remote_code)
    reward_model = load_reward_model(values["reward_model"], config.device, "auto", values["reward_batch_size"],
                                     config.trust_remote_code)
    encoder = load_encoder(values["embedding_model"])
    engine = None if all(plan.done for plan in plans) else open_engine(config, spec, tokenizer)
    resources = Resources(engine=engine, max_new_tokens=config.max_new_tokens, loaded_reward_model=reward_model)
    scoring = dict(output_dir=config.output_dir, overwrite=config.overwrite)
    # ------------------------------------------------------------------------------------------------------ run
    rows = []
    reuse = engine.reusing_prefill(int(values["prefill_memory_gb"] * 2**30)) if engine else contextlib.nullcontext()
    with reuse:
        for index, (plan, cell) in enumerate(zip(plans, [None] + cells)):
            run = run_decode(base_config if cell is None else config, plan.options, engine, resources, prefix)
            reward_config = MeasureRewardConfig(out_file=run, reward_model=values["reward_model"],
                                                model_name=config.model_name, dataset_name=config.dataset_name,
                                                batch_size=values["reward_batch_size"],
                                                baseline=None if cell is None else rows[0]["run"], **scoring)
            reward = load_json(run_measure_reward(reward_config, reward_model))
            evaluation = load_json(run_metrics(MetricsConfig(run_name=run, embedding_model=values["embedding_model"],
                                                             **scoring), encoder))
            rows.append(dict(run=run, **(cell or {}), **{k: reward.get(k) for k in (
                "average_reward", "standard_error", "paired_difference", "paired_standard_error")},
                **{f"heldout_{k}": (reward.get("heldout") or {}).get(k) for k in (
                    "reward_model", "average_reward", "paired_difference", "paired_standard_error")},
                **{k: evaluation[k] for k in ("diversity", "coherence", "rep-2", "rep-3", "rep-4", "length")}))
            if index:
                print(f"{describe(rows[-1], list(grid))}: reward {rows[-1]['average_reward']:.4f} "
                      f"({rows[-1]['paired_difference']:+.4f} vs base), diversity {rows[-1]['diversity']:.3f}, "
                      f"coherence {rows[-1]['coherence']:.3f}")
    base, cells = rows[0], rows[1:]
    chosen = choose(cells, base, values["min_diversity_ratio"], values["min_coherence_ratio"])
    # ------------------------------------------------------------------------------------------------------ save
    for cell in cells + [base]:
        cell["paper_score"] = paper_score(cell)
    rule = values["rule"]
    num_prompts = len(load_json(output_path(config.output_dir, "reward", base["run"]))["rewards"])
    result = {"model_name": config.model_name, "dataset_name": config.dataset_name, "split": config.split,
              "num_prompts": num_prompts, "method": method.name, "tuned": list(grid), "value_model": value_model,
              "value_model_sha256": value_model and value_model_fingerprint(value_model),
              "rule": rule, "min_diversity_ratio": values["min_diversity_ratio"],
              "min_coherence_ratio": values["min_coherence_ratio"], "chosen": chosen[rule], "rules": chosen,
              "base": base, "cells": cells}
    save_json(result, stem + ".json")
    write_sidecar(stem + ".json", config, sweep=values)
    save_csv([base] + cells, stem + ".csv", list(cells[0]))
    table = grid_table(cells, base, chosen, list(grid))
    note = (f"\n{num_prompts} prompts of the '{config.split}' split. Paper rule: {describe(chosen['paper'], grid)}"
            f". Constrained rule (diversity >= {values['min_diversity_ratio']}x, coherence >= "
            f"{values['min_coherence_ratio']}x base): {describe(chosen['constrained'], grid)}. Chosen ({rule} "
            f"rule): {describe(chosen[rule], grid)}.\n")
    with atomic_path(stem + ".md") as tmp:
        with open(tmp, "w") as f:
            f.write(table + note)
    plot_grid(cells, base, chosen, list(grid), stem + ".png", method.label)
    print("\n" + table + note + f"-> {stem}.json, .csv, .md, .png")


if __name__ == "__main__":
    cli.main_guard(main)
