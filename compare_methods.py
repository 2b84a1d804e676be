"""Every test-time method on the same test prompts, scored by stages 5-6 (and 7 when a judge is configured).

    python compare_methods.py --model_name smollm2_135M --dataset_name demo --max_new_tokens 40 \\
        --output_dir runs/demo \\
        --settings_from results/smollm2_135M_demo_sweep.json \\
        --static_re_settings_from results/smollm2_135M_demo_sweep_static_re.json

RE-Control's alpha and n and Static RE's strength come from sweeps on the tuning split (sweep.py; each
--settings_from file applies to the method it was swept for), or from the flags.

With the fine-tuning baselines (finetune_baseline.py) and only the rows of the fine-tuning comparison:
    python compare_methods.py --max_new_tokens 40 --batch_size 50 --output_dir runs/demo_ft --methods base,re_control \
        --settings_from results/smollm2_135M_demo_sweep.json \
        --dpo_adapter runs/demo_ft/trained_model/smollm2_135M_demo_dpo_lora \
        --online_adapter runs/demo_ft/trained_model/smollm2_135M_demo_rloo_lora
adds the rows DPO (LoRA), RLOO (LoRA) and DPO (LoRA) + RE-Control (the base model's value model reused on the
fine-tuned model's states), and a table of training costs: each adapter's wall time, peak memory and trainable
parameters beside RE-Control's (stage 1 on the training split + stage 3, and the value model's parameters).

Needs stages 1-3 first (features, labels and the value model trained with --value_lr). Runs every registered
decoding method (utils.decoding: Base, Prompting, RE-Control, RE-Control + Prompting, Static RE, Best-of-N, ARGS,
CD prefix, and any you register) through stage 4 as decode_methods.py does,
with the policy, the reward model and the sentence encoder each loaded once, then writes
results/{m}_{d}_comparison.md, .csv (method, diversity, coherence, average reward and its standard error, paired
difference to base, win rate, inference seconds) and .png: average reward against inference time, the time-quality
frontier.
"""
import os
from dataclasses import dataclass
from typing import Optional

from utils import cli
from utils.config import build, option, redefault
from utils.configs import DecodeConfig, GenerationOptions, JudgeConfig
from utils.decoding import Resources, methods, option_classes, options_from
from utils.engines import HFEngine, open_engine
from utils.errors import UsageError
from utils.io import (
    adapter_meta_path,
    features_path,
    load_json,
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
from utils.stages.scoring import score_runs
from utils.stages.stage4_inference import find_policy_value_model, run_decode
from utils.stages.stage7_judge import run_gpt4_eval
from utils.table import gather, notes, write_table
from utils.value_model import load_value_model


@dataclass(frozen=True)
class CompareOptions(DecodeConfig):
    batch_size: int = redefault(GenerationOptions, "batch_size", 50)
    methods: Optional[str] = option(None, "comma-separated decoding methods to run (base is always run: the paired "
                                    "differences need it); default: every registered method", group="comparison")
    settings_from: Optional[tuple] = option(None, "a sweep result (sweep.py on a tuning split); it sets the swept "
                                            "options of the method it was swept for (repeat the flag for several)",
                                            repeat=True, group="comparison")
    static_re_settings_from: Optional[str] = option(None, "Static RE's sweep result (the same as another "
                                                    "--settings_from)", group="comparison")
    dpo_adapter: Optional[str] = option(None, "a LoRA DPO adapter (finetune_baseline.py --method dpo): adds the "
                                        "rows DPO (LoRA) and DPO (LoRA) + RE-Control (the base model's value model "
                                        "reused), with training costs", group="comparison")
    online_adapter: Optional[str] = option(None, "a LoRA adapter of the online method (finetune_baseline.py "
                                           "--method rloo): adds its row, with its training cost",
                                           group="comparison")
    embedding_model: str = option("minilm", "coherence encoder (metrics.py)", group="comparison")
    judge_base_url: Optional[str] = option(None, "OpenAI-compatible judge for stage 7 (also run when "
                                           "OPENAI_API_KEY is set)", group="comparison")


def build_parser():
    return cli.build_parser(__doc__, CompareOptions, *option_classes(),
                            exclude=("method", "prompting", "split", "adapter"))


def parse_args(argv=None):
    """(CompareOptions, the parsed flags: every method's options are read from them)."""
    values = cli.parse(build_parser(), argv)
    values["settings_from"] = tuple(values["settings_from"] or ()) + (
        (values["static_re_settings_from"],) if values["static_re_settings_from"] else ())
    return build(CompareOptions, values, static_re_settings_from=None), values


def method_keys(value):
    """The methods to run, in the registry's order, base first."""
    registry = list(methods())
    keys = [k.strip() for k in value.split(",") if k.strip()] if value else registry
    unknown = [k for k in keys if k not in registry]
    if unknown:
        raise UsageError(f"unknown method {unknown[0]!r}; choose from {', '.join(registry)}")
    return ["base"] + [k for k in registry if k in keys and k != "base"]


def sweeps_by_method(paths):
    """{method: sweep result path}: each file applies to the method it was swept for."""
    by_method = {}
    for path in paths:
        swept = (load_json(path, "sweep.py") or {}).get("method") if path else None
        if swept is None:
            raise UsageError(f"{path} is not a sweep result (no 'method'); write one with sweep.py")
        by_method[swept] = path
    return by_method


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
    config, values = parse_args(argv)
    cli.setup(config)
    m = model_tag(config.model_name)
    sweeps = sweeps_by_method(config.settings_from)
    common = dict(values, split="test", prompting=False, adapter=None)

    def run_config(key, **extra):
        return build(DecodeConfig, common, method=key, settings_from=sweeps.get(key.removesuffix("_prompting")),
                     **extra)
    plans = [(run_config(key), options_from(methods()[key], values)) for key in method_keys(config.methods)]
    # ------------------------------------------------------------------------------------------------------ load
    spec = resolve_model(config.model_name)
    tokenizer = load_policy_tokenizer(spec)
    engine = open_engine(config, spec, tokenizer)
    reward_model = load_reward_model(config.reward_model, config.device, "auto", 32)
    resources = Resources(engine=engine, max_new_tokens=config.max_new_tokens, loaded_reward_model=reward_model)
    encoder = load_encoder(config.embedding_model)
    judge = config.judge_base_url or os.environ.get("OPENAI_API_KEY")
    # ------------------------------------------------------------------------------------------------------ run
    runs = [run_decode(run_config, options, engine, resources) for run_config, options in plans]
    # the fine-tuned policies: each answered as base; DPO's also with RE-Control, the base model's value model reused
    value_stem = find_policy_value_model(run_config("re_control"))[0]
    for kind, adapter in (("dpo", config.dpo_adapter), ("online", config.online_adapter)):
        if not adapter:
            continue
        tuned_model, _ = load_model_and_tokenizer(resolve_model(config.model_name, None, adapter), config.device,
                                                  "auto", False, None, tokenizer)
        tuned = HFEngine(tuned_model, tokenizer, engine.add_special_tokens)
        tuned_resources = Resources(engine=tuned, max_new_tokens=config.max_new_tokens)
        runs.append(run_decode(run_config("base", adapter=adapter), None, tuned, tuned_resources))
        if kind == "dpo":
            reused = run_config("re_control", adapter=adapter, value_model=config.value_model or value_stem)
            runs.append(run_decode(reused, options_from(methods()["re_control"], values), tuned, tuned_resources))
        del tuned_model, tuned
    base = runs[0]
    scoring = dict(output_dir=config.output_dir, overwrite=config.overwrite)
    score_runs(runs, base, dict(reward_model=config.reward_model, model_name=config.model_name,
                                dataset_name=config.dataset_name, **scoring),
               dict(embedding_model=config.embedding_model, **scoring), reward_model, encoder)
    for run in runs[1:] if judge else ():
        run_gpt4_eval(JudgeConfig(run_name_red=run, run_name_blue=base, base_url=config.judge_base_url, **scoring))
    # ------------------------------------------------------------------------------------------------------ save
    rows = gather(config.output_dir, f"{m}_{config.dataset_name}_", base, runs)
    stem = output_stem(config.output_dir, "results", f"{m}_{config.dataset_name}_comparison")
    note = notes(rows)
    if config.dpo_adapter or config.online_adapter:
        costs = training_costs(config, m, value_stem)
        note += "\n\n" + cost_table(costs)
        write_cost_csv(costs, stem + "_training.csv")
    write_table(rows, stem, note)
    plot_frontier(rows, stem + ".png")
    print(f"-> {stem}.md, {stem}.csv, {stem}.png" + (f", {stem}_training.csv" if config.dpo_adapter or
                                                       config.online_adapter else ""))


if __name__ == "__main__":
    cli.main_guard(main)
