"""Stage 3's on-policy refits (--rounds R): round r regenerates stage 1's rollouts with round r-1's edit on,
relabels them with stage 2's reward model, and trains round r's value model on them.

The state the value model reads stays the paper's: the final-norm output o_t before the edit (the capture hook runs
before the edit's), along trajectories the edited policy chose. The rollouts' settings are stage 1's and stage 2's
own, read from their .meta.json files, so a refit differs from round 1 only by the edit. Each round writes
    refits/{value model name}/features/...      the round's rollouts, states and labels (stages 1-2's files)
    trained_model/value_model_..._r{r}_ra{alpha}_rn{n}   its value model, whose .json "lineage" names its parent
"""
import dataclasses
import os

from utils.config import as_dict
from utils.configs import ActivationsConfig, RewardLabelConfig
from utils.engines import Edit, open_engine
from utils.errors import UsageError
from utils.io import features_path, load_json, sidecar_path
from utils.models import load_policy_tokenizer, resolve_model
from utils.names import model_tag, named_dataset, value_model_stem, value_model_variant
from utils.stages.stage1_activations import run_get_activations
from utils.stages.stage2_reward_label import run_reward_label
from utils.value_model import load_value_model, value_model_fingerprint


def recorded_config(path, config_class, stage):
    """The config a stage ran with, from its output's .meta.json ("args"), for the fields `config_class` has."""
    sidecar = sidecar_path(path)
    if not os.path.exists(sidecar):
        raise UsageError(f"--rounds repeats {stage} with its own settings, but {sidecar} (what records them) is "
                         f"missing; re-run {stage} in this --output_dir")
    recorded = load_json(sidecar, stage).get("args", {})
    names = {f.name for f in dataclasses.fields(config_class)}
    return config_class(**{k: v for k, v in recorded.items() if k in names})


def refit_engine(name):
    """--refit_engine auto: vLLM where it is installed, else HF."""
    if name != "auto":
        return name
    from utils.vllm_engine import vllm_available
    return "vllm" if vllm_available() else "hf"


def refit_rounds(args, first_stem, train_round):
    """Rounds 2..R of a ValueModelConfig; `train_round(config, train_root, lineage)` trains and saves one value model
    (stage 3's). Returns the last round's value model path without extension."""
    m, d = model_tag(args.model_name), named_dataset(args)
    stage1 = recorded_config(features_path(args.output_dir, m, d, "response", "train"), ActivationsConfig,
                             "get_activations_only.py")
    stage2 = recorded_config(features_path(args.output_dir, m, d, "labels", "train"), RewardLabelConfig,
                             "reward_label.py --mode train")
    engine_name = refit_engine(args.refit_engine)
    stage1 = dataclasses.replace(stage1, splits="train", engine=engine_name, overwrite=args.overwrite)
    spec = resolve_model(stage1.model_name, stage1.chat_template, stage1.adapter)
    tokenizer = load_policy_tokenizer(spec, stage1.trust_remote_code)
    engine = open_engine(stage1, spec, tokenizer)
    parent = first_stem
    try:
        for r in range(2, args.rounds + 1):
            config = dataclasses.replace(args, rounds=r)
            variant = value_model_variant(as_dict(config), args.model_name, args.dataset_name)
            name = os.path.basename(value_model_stem(args.output_dir, m, d, args.lr, variant))
            folder = os.path.join(args.output_dir, "refits", name)
            parent_sha256 = value_model_fingerprint(parent)
            edit = {"value_model": os.path.relpath(parent, folder), "value_model_sha256": parent_sha256,
                    "step_size": args.refit_step_size, "num_updates": args.refit_num_updates}
            print(f"round {r} of {args.rounds}: rollouts with {os.path.basename(parent)}'s edit on (alpha "
                  f"{args.refit_step_size:g}, n {args.refit_num_updates}, {engine_name}) -> {folder}")
            run_get_activations(dataclasses.replace(stage1, output_dir=folder), engine, tokenizer,
                                Edit(load_value_model(parent), args.refit_step_size, args.refit_num_updates), edit)
            run_reward_label(dataclasses.replace(stage2, output_dir=folder, overwrite=args.overwrite))
            lineage = {"round": r, "parent": os.path.relpath(parent, args.output_dir),
                       "parent_sha256": parent_sha256,
                       "rollouts": os.path.relpath(features_path(folder, m, d, "response", "train"), args.output_dir),
                       "rollout_edit": {"step_size": args.refit_step_size, "num_updates": args.refit_num_updates,
                                        "engine": engine_name}}
            parent = train_round(config, folder, lineage)
    finally:
        engine.close()
    return parent
