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
(Static RE: results/{m}_{d}_sweep_static_re.*). Every cell's responses and scores are kept under response/,
final_reward/ and evaluations/ as {m}_{d}_{split}_..., so running the same command again skips the finished cells.
Stage 4 and the comparison methods read the chosen setting:
    python inference_intervention.py --use_intervention True --value_lr 0.001 \\
        --settings_from runs/demo/results/smollm2_135M_demo_sweep.json
"""
import contextlib

from utils import cli
from utils.data import load_prompts
from utils.features import load_sequences
from utils.generation import answer_prompts, decode_rows, generate_batch, generation_config
from utils.intervention import ValueIntervention
from utils.io import (
    atomic_path,
    load_reward_record,
    output_path,
    output_stem,
    read_json_or_none,
    response_path,
    run_settings,
    save_csv,
    save_json,
    write_sidecar,
)
from utils.methods import StaticIntervention, linear_probe_direction
from utils.metrics import SIMCSE_MODEL, cut_at_next_turn, load_encoder, reward_result, text_metrics
from utils.models import hidden_size, load_model_and_tokenizer, load_policy_tokenizer, resolve_model
from utils.names import model_tag, named_dataset
from utils.rewards import load_reward_model
from utils.runs import written_with
from utils.stages.stage4_inference import find_policy_value_model
from utils.sweep import RULES, choose, describe, grid_table, paper_score, plot_grid
from utils.value_model import check_value_model, load_value_model
from utils.vllm_engine import engine_decode, open_engine


def parse_args(argv=None):
    parser = cli.make_parser(__doc__)
    cli.add_policy_stage_args(parser, batch_size=16, max_new_tokens=128)
    group = parser.add_argument_group("sweep")
    group.add_argument("--split", type=str, default="tune",
                       help="split to answer: a tuning split, never the one the reported figures come from")
    group.add_argument("--method", type=str, default="re_control", choices=["re_control", "static_re"],
                       help="what to tune: RE-Control's (alpha, n) or Static RE's strength")
    group.add_argument("--step_sizes", type=cli.float_list, default=[0.5, 1.0, 2.0, 4.0, 8.0],
                       help="re_control: comma-separated step sizes alpha")
    group.add_argument("--num_updates", type=cli.int_list, default=[10, 20],
                       help="re_control: comma-separated numbers of updates n")
    group.add_argument("--strengths", type=cli.float_list, default=[1.0, 2.0, 4.0, 8.0],
                       help="static_re: comma-separated lengths of the control vector")
    group.add_argument("--value_lr", type=cli.positive_float, default=1e-4,
                       help="picks trained_model/value_model_{m}_{d}_{value_lr}[_variant] (re_control) and names "
                            "the runs")
    group.add_argument("--value_model", type=str, default=None,
                       help="re_control: path of a value model (without extension) instead of the one --value_lr "
                            "picks; its file name then names the runs")
    group.add_argument("--rule", type=str, default="paper", choices=RULES,
                       help="which rule's cell is 'chosen' (what --settings_from reads): the paper's maximum of "
                            "coherence + diversity + reward, or the highest reward within the ratio limits")
    group.add_argument("--min_diversity_ratio", type=cli.nonnegative_float, default=0.9,
                       help="constrained rule: diversity at least this times base's")
    group.add_argument("--min_coherence_ratio", type=cli.nonnegative_float, default=0.95,
                       help="constrained rule: coherence at least this times base's")
    group.add_argument("--reward_model", type=str, default="vader",
                       help="reward model of the scores (as in stage 5): 'vader', openbmb/UltraRM-13b or a "
                            "sequence-classification reward model")
    group.add_argument("--reward_batch_size", type=cli.positive_int, default=32, help="texts per reward-model batch")
    group.add_argument("--embedding_model", type=str, default=SIMCSE_MODEL,
                       help="coherence encoder (as in stage 6); offline: 'minilm'")
    group.add_argument("--name", type=str, default=None,
                       help="result name under results/ (default {m}_{d}_sweep, or {m}_{d}_sweep_static_re)")
    return parser.parse_args(argv)


def cell_plan(args, prefix, value_tag):
    """[(run name, cell settings)] in grid order."""
    if args.method == "static_re":
        return [(f"{prefix}_static_re_{s}", {"strength": s}) for s in args.strengths]
    return [(f"{prefix}_{value_tag}_{n}_{a}", {"step_size": a, "num_updates": n})
            for n in args.num_updates for a in args.step_sizes]


def scored(root, run, settings):
    """The cell's stage-5/6 records if a run with these settings finished them, else None."""
    paths = [output_path(root, kind, run) for kind in ("reward", "evaluation")]
    if not all(written_with(p, settings) for p in [response_path(root, run), *paths]):
        return None
    records = [read_json_or_none(p) for p in paths]
    return None if None in records else records


def main(argv=None):
    args = parse_args(argv)
    cli.setup(args)
    if args.engine == "vllm" and args.method == "static_re":
        raise cli.UsageError("Static RE adds its vector through a hook in HF's generate: sweep it with --engine hf")
    m, d = model_tag(args.model_name), named_dataset(args)
    prefix = f"{m}_{d}_{args.split}"
    name = args.name or f"{m}_{d}_sweep" + ("_static_re" if args.method == "static_re" else "")
    stem = output_stem(args.output_dir, "results", name)
    vm_path, value_tag = None, None
    if args.method == "re_control":
        vm_path, value_tag = find_policy_value_model(args, m)
    plan = cell_plan(args, prefix, value_tag)
    # what a cell's answers and scores depend on (not where they are written: a copied base run is reused)
    generation = run_settings(args, ignore=("output_dir", "step_sizes", "num_updates", "strengths", "rule", "min_diversity_ratio",
                                            "min_coherence_ratio", "name", "method", "value_lr", "value_model"))
    # ------------------------------------------------------------------------------------------------------ load
    spec = resolve_model(args.model_name, args.chat_template, args.adapter)
    tokenizer = load_policy_tokenizer(spec, args.trust_remote_code)
    prompts = load_prompts(args, args.split, spec, tokenizer)
    value_model, direction = None, None
    if vm_path:
        value_model = load_value_model(vm_path)
        check_value_model(value_model, args.model_name, None)
    else:
        direction = linear_probe_direction(load_sequences(args.output_dir, m, d, "train"))
    model = None
    reward_model = load_reward_model(args.reward_model, args.device, "auto", args.reward_batch_size,
                                     args.trust_remote_code)
    encoder = load_encoder(args.embedding_model)
    add_special = not spec.chat_template

    def run_cell(run, cell):
        """Answer the split at one cell (None = base) and score it; skipped if already done with these settings."""
        nonlocal model, tokenizer
        settings = dict(generation, **(cell or {}), value_model=vm_path if cell and vm_path else None)
        done = scored(args.output_dir, run, settings)
        if done:
            print(f"{run}: already scored, skipped")
            return done
        if model is None and args.engine == "vllm":
            model = open_engine(args, spec)
        elif model is None:
            model, tokenizer = load_model_and_tokenizer(spec, args.device, args.dtype, args.trust_remote_code,
                                                        args.device_map, tokenizer)
            if value_model is not None:
                check_value_model(value_model, args.model_name, hidden_size(model))
                value_model.to(model.device)
        method = "base" if cell is None else "static_re" if "strength" in cell else "RE-Control"
        hook = contextlib.nullcontext()
        if args.engine == "vllm":
            edit = dict(value_model=value_model, step_size=cell["step_size"], num_updates=cell["num_updates"]) if (
                method == "RE-Control") else {}

            def decode_batch(texts, _conversations):
                return engine_decode(model, tokenizer, texts, add_special, args.max_new_tokens, **edit)
        else:
            if method == "static_re":
                hook = StaticIntervention(model, direction, cell["strength"])
            elif method == "RE-Control":
                hook = ValueIntervention(model, value_model, cell["step_size"], cell["num_updates"])
            config = generation_config(model, tokenizer, args.max_new_tokens)

            def decode_batch(texts, _conversations):
                return decode_rows(tokenizer, *generate_batch(model, tokenizer, texts, config, add_special))
        out = response_path(args.output_dir, run)
        with hook:
            records = answer_prompts(args, prompts, tokenizer, add_special, decode_batch, f"{run}", out, settings,
                                     method=method, split=args.split,
                                     value_model=value_model.config if cell and vm_path else None, **(cell or {}))
        rewards = reward_model.score([r["conversation"] for r in records],
                                     [cut_at_next_turn(r["results"]) for r in records], progress=False)
        base_record = None if cell is None else load_reward_record(output_path(args.output_dir, "reward",
                                                                                f"{prefix}_base"), "sweep.py")
        reward = reward_result(run, args.reward_model, rewards, base_record)
        summary, rows, tokenizers = text_metrics(records, encoder)
        evaluation = {"run": run, "tokenizer": tokenizers, "embedding_model": args.embedding_model, **summary,
                      "rows": rows}
        for kind, record in (("reward", reward), ("evaluation", evaluation)):
            path = output_path(args.output_dir, kind, run)
            save_json(record, path)
            write_sidecar(path, args, settings)
        return reward, evaluation

    # ------------------------------------------------------------------------------------------------------ run
    def summarize(run, cell, reward, evaluation):
        keys = ("diversity", "coherence", "rep-2", "rep-3", "rep-4", "length")
        return dict(run=run, **(cell or {}), **{k: reward.get(k) for k in (
            "average_reward", "standard_error", "paired_difference", "paired_standard_error")},
            **{k: evaluation[k] for k in keys})

    base = summarize(f"{prefix}_base", None, *run_cell(f"{prefix}_base", None))
    cells = []
    for run, cell in plan:
        cells.append(summarize(run, cell, *run_cell(run, cell)))
        print(f"{describe(cells[-1], args.method)}: reward {cells[-1]['average_reward']:.4f} "
              f"({cells[-1]['paired_difference']:+.4f} vs base), diversity {cells[-1]['diversity']:.3f}, "
              f"coherence {cells[-1]['coherence']:.3f}")
    chosen = choose(cells, base, args.min_diversity_ratio, args.min_coherence_ratio)
    # ------------------------------------------------------------------------------------------------------ save
    for cell in cells + [base]:
        cell["paper_score"] = paper_score(cell)
    result = {"model_name": args.model_name, "dataset_name": args.dataset_name, "split": args.split,
              "num_prompts": len(prompts), "method": args.method, "value_model": vm_path, "rule": args.rule,
              "min_diversity_ratio": args.min_diversity_ratio, "min_coherence_ratio": args.min_coherence_ratio,
              "chosen": chosen[args.rule], "rules": chosen, "base": base, "cells": cells}
    save_json(result, stem + ".json")
    write_sidecar(stem + ".json", args)
    save_csv([base] + cells, stem + ".csv", list(cells[0]))
    table = grid_table(cells, base, chosen, args.method)
    note = (f"\n{len(prompts)} prompts of the '{args.split}' split. Paper rule: {describe(chosen['paper'], args.method)}"
            f". Constrained rule (diversity >= {args.min_diversity_ratio}x, coherence >= "
            f"{args.min_coherence_ratio}x base): {describe(chosen['constrained'], args.method)}. Chosen ({args.rule} "
            f"rule): {describe(chosen[args.rule], args.method)}.\n")
    with atomic_path(stem + ".md") as tmp:
        with open(tmp, "w") as f:
            f.write(table + note)
    plot_grid(cells, base, chosen, args.method, stem + ".png")
    print("\n" + table + note + f"-> {stem}.json, .csv, .md, .png")


if __name__ == "__main__":
    cli.main_guard(main)
