"""Every test-time method on the same test prompts, scored by stages 5-6 (and 7 when a judge is configured).

    python compare_methods.py --model_name smollm2_135M --dataset_name demo --max_new_tokens 40 --output_dir runs/demo \\
        --settings_from results/smollm2_135M_demo_sweep.json \\
        --static_re_settings_from results/smollm2_135M_demo_sweep_static_re.json

RE-Control's alpha and n and Static RE's strength come from sweeps on the tuning split (sweep.py), or from the flags.

With the fine-tuning baselines (finetune_baseline.py) and only the rows of the fine-tuning comparison:
    python compare_methods.py --max_new_tokens 40 --batch_size 50 --output_dir runs/demo_ft --methods base,re_control \
        --settings_from results/smollm2_135M_demo_sweep.json \
        --dpo_adapter runs/demo_ft/trained_model/smollm2_135M_demo_dpo_lora \
        --online_adapter runs/demo_ft/trained_model/smollm2_135M_demo_rloo_lora
adds the rows DPO (LoRA), RLOO (LoRA) and DPO (LoRA) + RE-Control (the base model's value model reused on the
fine-tuned model's states), and a table of training costs: each adapter's wall time, peak memory and trainable
parameters beside RE-Control's (stage 1 on the training split + stage 3, and the value model's parameters).

Needs stages 1-3 first (features, labels and the value model trained with --value_lr). Runs Base, Prompting,
RE-Control, RE-Control + Prompting, Static RE, Best-of-N, ARGS and CD prefix as stage 4 and decode_methods.py do,
with the policy, the reward model and the sentence encoder each loaded once, then writes
results/{m}_{d}_comparison.md, .csv (method, diversity, coherence, average reward and its standard error, paired
difference to base, win rate, inference seconds) and .png: average reward against inference time, the time-quality
frontier.
"""
import os

import decode_methods
import gpt4_eval
import inference_intervention
import measure_reward
import metrics
from make_table import gather, notes, write_table
from utils import cli
from utils.io import (
    adapter_meta_path,
    features_path,
    new_figure,
    output_stem,
    read_json_or_none,
    save_csv,
    save_figure,
    sidecar_path,
)
from utils.metrics import load_encoder
from utils.models import load_model_and_tokenizer, load_policy_tokenizer, resolve_model
from utils.names import model_tag
from utils.rewards import load_reward_model
from utils.stages.stage4_inference import run_decode_method, run_inference_intervention
from utils.stages.stage5_reward import run_measure_reward
from utils.stages.stage6_metrics import run_metrics
from utils.stages.stage7_judge import run_gpt4_eval
from utils.value_model import find_value_model, load_value_model

METHOD_KEYS = ("base", "prompting", "re_control", "re_control_prompting", "static_re", "best_of_n", "args", "cd_prefix")


def method_list(value):
    keys = [k.strip() for k in value.split(",") if k.strip()]
    unknown = [k for k in keys if k not in METHOD_KEYS]
    if unknown:
        raise cli.argparse.ArgumentTypeError(f"unknown method {unknown[0]!r}; choose from {', '.join(METHOD_KEYS)}")
    return keys


def parse_args(argv=None):
    parser = cli.make_parser(__doc__)
    parser.add_argument("--model_name", type=str, default="smollm2_135M", help="policy LLM (as in stages 1-4)")
    parser.add_argument("--dataset_name", type=str, default="demo", help="data set name (as in stages 1-4)")
    parser.add_argument("--data_file", type=str, default=None, help="local prompts file, as in stages 1 and 4")
    parser.add_argument("--limit", type=cli.positive_int, default=None, help="use only the first N test prompts")
    parser.add_argument("--max_new_tokens", type=cli.positive_int, default=128, help="tokens per response")
    parser.add_argument("--device", type=str, default="auto", help="'auto', 'cpu', 'cuda', 'cuda:N' or a GPU index")
    parser.add_argument("--seed", type=int, default=0, help="random seed of every method")
    parser.add_argument("--batch_size", type=cli.positive_int, default=50, help="prompts per generation batch")
    parser.add_argument("--methods", type=method_list, default=",".join(METHOD_KEYS),
                        help="comma-separated test-time methods to run (base is always run: the paired "
                             "differences need it): " + ", ".join(METHOD_KEYS))
    parser.add_argument("--value_lr", type=cli.positive_float, default=1e-3, help="picks the stage-3 value model")
    parser.add_argument("--value_model", type=str, default=None,
                        help="path of the value model (without extension) instead of the one --value_lr picks")
    parser.add_argument("--lr", type=cli.nonnegative_float, default=None, help="RE-Control step size (default: the "
                        "setting's)")
    parser.add_argument("--epochs", type=cli.nonnegative_int, default=None, help="RE-Control number of updates")
    parser.add_argument("--settings_from", type=str, default=None,
                        help="RE-Control's alpha and n from a sweep result (sweep.py on a tuning split)")
    parser.add_argument("--strength", type=cli.nonnegative_float, default=4.0, help="Static RE vector length")
    parser.add_argument("--static_re_settings_from", type=str, default=None,
                        help="Static RE's strength from a sweep result (sweep.py --method static_re)")
    parser.add_argument("--num_candidates", type=cli.positive_int, default=4, help="Best-of-N N and CD prefix K")
    parser.add_argument("--top_k", type=cli.positive_int, default=10, help="ARGS candidate tokens per step")
    parser.add_argument("--weight", type=cli.nonnegative_float, default=1.0, help="ARGS reward weight")
    parser.add_argument("--block_size", type=cli.positive_int, default=8, help="CD prefix block length")
    parser.add_argument("--reward_model", type=str, default="vader", help="reward model of stages 5, BoN and ARGS")
    parser.add_argument("--dpo_adapter", type=str, default=None,
                        help="a LoRA DPO adapter (finetune_baseline.py --method dpo): adds the rows DPO (LoRA) and "
                             "DPO (LoRA) + RE-Control (the base model's value model reused), with training costs")
    parser.add_argument("--online_adapter", type=str, default=None,
                        help="a LoRA adapter of the online method (finetune_baseline.py --method rloo): adds its "
                             "row, with its training cost")
    parser.add_argument("--embedding_model", type=str, default="minilm", help="coherence encoder (metrics.py)")
    parser.add_argument("--judge_base_url", type=str, default=None,
                        help="OpenAI-compatible judge for stage 7 (also run when OPENAI_API_KEY is set)")
    cli.add_output_args(parser)
    return parser.parse_args(argv)


def plot_frontier(rows, path):
    fig, ax = new_figure(figsize=(6.5, 4.5))
    for row in rows:
        ax.errorbar(row["time (s)"], row["average reward"], yerr=row["reward SE"], fmt="o", capsize=3,
                    label=row["method"])
    ax.legend(fontsize=7, loc="best")
    ax.set_xscale("log")
    ax.set_xlabel("inference time (s, log scale)")
    ax.set_ylabel("average reward (± SE)")
    ax.set_title("time-quality frontier")
    save_figure(fig, path)


COST_COLUMNS = ["method", "what is trained", "training wall time (s)", "peak memory (MB)", "trained parameters"]


def training_costs(args, m, value_stem):
    """Training cost of each method: RE-Control's stage 1 (training split) + stage 3 from their records, each
    adapter's from its .meta.json. Peak memory is the process's resident-set high-water mark (model loading
    included); wall times are those the stages recorded (stage 1: generation; stage 3 and fine-tuning: the whole run
    but the policy's load)."""
    stage1 = read_json_or_none(sidecar_path(features_path(args.output_dir, m, args.dataset_name, "response",
                                                          "train"))) or {}
    stage3 = read_json_or_none(value_stem + ".json") or {}
    value_parameters = stage3.get("num_parameters") or sum(
        p.numel() for p in load_value_model(value_stem).parameters())
    parts = [stage1.get("seconds"), stage3.get("seconds")]
    unrecorded = [name for name, meta in (("stage 1", stage1), ("stage 3", stage3)) if not meta.get("peak_rss_mb")]
    re_control = {"method": "RE-Control", "what is trained": (
        f"value model on stage-1 rollouts (stage 1: {fmt(parts[0])} s, stage 3: {fmt(parts[1])} s"
        + (f"; peak memory of {' and '.join(unrecorded)} not recorded" if unrecorded else "") + ")"),
        "training wall time (s)": sum(parts) if None not in parts else None,
        "peak memory (MB)": max((v for v in (stage1.get("peak_rss_mb"), stage3.get("peak_rss_mb")) if v),
                                default=None),
        "trained parameters": value_parameters}
    rows = [re_control]
    for adapter in (args.dpo_adapter, args.online_adapter):
        if not adapter:
            continue
        meta = read_json_or_none(adapter_meta_path(adapter)) or {}
        name = f"{meta.get('method_name', os.path.basename(adapter))} (LoRA)"
        settings = meta.get("args", {})
        seen = (meta.get("steps") or 0) * (settings.get("batch_size") or 0)
        data = (f"{min(seen, meta.get('pairs') or 0)} of {meta.get('pairs')} pairs from {meta.get('pairs_from')}"
                if meta.get("method") == "dpo" else f"{min(seen, meta.get('prompts') or 0)} of {meta.get('prompts')} "
                f"prompts x {settings.get('num_generations')} samples")
        rows.append({"method": name, "what is trained": (
            f"LoRA r={settings.get('lora_r')}, {meta.get('steps')} steps of {settings.get('batch_size')} prompts "
            f"({data})"),
            "training wall time (s)": meta.get("train_seconds"), "peak memory (MB)": meta.get("peak_rss_mb"),
            "trained parameters": meta.get("trainable_parameters")})
        if adapter == args.dpo_adapter:
            both = [rows[-1]["training wall time (s)"], re_control["training wall time (s)"]]
            rows.append({"method": f"{name} + RE-Control", "what is trained": "both (the value model is reused, "
                         "not retrained on the fine-tuned model's states)",
                         "training wall time (s)": sum(both) if None not in both else None,
                         "peak memory (MB)": max((v for v in (rows[-1]["peak memory (MB)"],
                                                              re_control["peak memory (MB)"]) if v), default=None),
                         "trained parameters": (rows[-1]["trained parameters"] or 0) + value_parameters})
    return rows


def fmt(value):
    if value is None:
        return "—"
    return f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"


def cost_table(rows):
    lines = ["Training cost:", "", "| " + " | ".join(COST_COLUMNS) + " |", "|" + "---|" * len(COST_COLUMNS)]
    lines += ["| " + " | ".join(fmt(r[k]) if k not in ("method", "what is trained") else r[k] for k in COST_COLUMNS)
              + " |" for r in rows]
    return "\n".join(lines)


def write_cost_csv(rows, path):
    save_csv(rows, path, COST_COLUMNS)


def main(argv=None):
    args = parse_args(argv)
    m = model_tag(args.model_name)
    common = ["--model_name", args.model_name, "--dataset_name", args.dataset_name, "--device", args.device,
              "--seed", str(args.seed), "--max_new_tokens", str(args.max_new_tokens), "--batch_size",
              str(args.batch_size), "--output_dir", args.output_dir, "--overwrite", str(args.overwrite)]
    common += (["--limit", str(args.limit)] if args.limit else []) + (["--data_file", args.data_file] if args.data_file
                                                                      else [])
    re_control = ["--use_intervention", "True", "--value_lr", str(args.value_lr)]  # alpha, n: stage 4 resolves them
    re_control += (["--settings_from", args.settings_from] if args.settings_from else []) + (
        ["--lr", str(args.lr)] if args.lr is not None else []) + (["--epochs", str(args.epochs)] if args.epochs is not
                                                                   None else [])
    re_control += ["--value_model", args.value_model] if args.value_model else []
    static = (["--settings_from", args.static_re_settings_from] if args.static_re_settings_from else
              ["--strength", str(args.strength)])
    cd_value = ["--value_lr", str(args.value_lr)] + (["--value_model", args.value_model] if args.value_model else [])
    plans = {
        "base": (inference_intervention, ["--use_intervention", "False"]),
        "prompting": (inference_intervention, ["--use_intervention", "False", "--prompting", "True"]),
        "re_control": (inference_intervention, re_control),
        "re_control_prompting": (inference_intervention, re_control + ["--prompting", "True"]),
        "static_re": (decode_methods, ["--method", "static_re", *static, "--value_lr", str(args.value_lr)]),
        "best_of_n": (decode_methods, ["--method", "best_of_n", "--num_candidates", str(args.num_candidates),
                                       "--reward_model", args.reward_model]),
        "args": (decode_methods, ["--method", "args", "--top_k", str(args.top_k), "--weight", str(args.weight),
                                  "--reward_model", args.reward_model]),
        "cd_prefix": (decode_methods, ["--method", "cd_prefix", "--num_candidates", str(args.num_candidates),
                                       "--block_size", str(args.block_size), *cd_value]),
    }
    plans = [plans[key] for key in METHOD_KEYS if key == "base" or key in args.methods]
    # the fine-tuned policies: each answered as base; DPO's also with RE-Control, the base model's value model reused
    value_stem = find_value_model(args.output_dir, m, args.dataset_name, args.value_lr, args.value_model)[0]
    tuned = [(adapter, [["--use_intervention", "False"]] + (
        [re_control + ([] if args.value_model else ["--value_model", value_stem])] if kind == "dpo" else []))
             for kind, adapter in (("dpo", args.dpo_adapter), ("online", args.online_adapter)) if adapter]
    # ------------------------------------------------------------------------------------------------------ load
    spec = resolve_model(args.model_name)
    model, tokenizer = load_model_and_tokenizer(spec, args.device, "auto", False, None,
                                                load_policy_tokenizer(spec))
    reward_model = load_reward_model(args.reward_model, args.device, "auto", 32)
    encoder = load_encoder(args.embedding_model)
    judge = args.judge_base_url or os.environ.get("OPENAI_API_KEY")
    # ------------------------------------------------------------------------------------------------------ run
    runs = []
    for script, extra in plans:  # every method through its stage function, on the one loaded model
        script_args = script.parse_args(common + extra)
        cli.setup(script_args)
        if script is inference_intervention:
            runs.append(run_inference_intervention(script_args, model, tokenizer))
        else:
            runs.append(run_decode_method(script_args, model, tokenizer, reward_model))
    for adapter, extras in tuned:  # one load per fine-tuned policy (the adapter merged into a fresh copy)
        tuned_model, _ = load_model_and_tokenizer(resolve_model(args.model_name, None, adapter), args.device, "auto",
                                                  False, None, tokenizer)
        for extra in extras:
            script_args = inference_intervention.parse_args(common + extra + ["--adapter", adapter])
            cli.setup(script_args)
            runs.append(run_inference_intervention(script_args, tuned_model, tokenizer))
        del tuned_model
    base = runs[0]
    scoring = ["--reward_model", args.reward_model, "--output_dir", args.output_dir, "--overwrite", str(args.overwrite)]
    for run in runs:
        run_measure_reward(measure_reward.parse_args(["--out_file", run, *scoring]
                                                     + (["--baseline", base] if run != base else [])), reward_model)
        run_metrics(metrics.parse_args(["--run_name", run, "--embedding_model", args.embedding_model, "--output_dir",
                                        args.output_dir, "--overwrite", str(args.overwrite)]), encoder)
        if judge and run != base:
            run_gpt4_eval(gpt4_eval.parse_args(["--run_name_red", run, "--run_name_blue", base, "--output_dir",
                                                args.output_dir, "--overwrite", str(args.overwrite)]
                                               + (["--base_url", args.judge_base_url] if args.judge_base_url else [])))
    # ------------------------------------------------------------------------------------------------------ save
    rows = gather(args.output_dir, f"{m}_{args.dataset_name}_", base, runs)
    stem = output_stem(args.output_dir, "results", f"{m}_{args.dataset_name}_comparison")
    note = notes(rows)
    if tuned:
        costs = training_costs(args, m, value_stem)
        note += "\n\n" + cost_table(costs)
        write_cost_csv(costs, stem + "_training.csv")
    write_table(rows, stem, note)
    plot_frontier(rows, stem + ".png")
    print(f"-> {stem}.md, {stem}.csv, {stem}.png" + (f", {stem}_training.csv" if tuned else ""))


if __name__ == "__main__":
    cli.main_guard(main)
