"""Every output name, in one place: model and data-set tags, value-model file names and tags, and run names.

{m} = model tag, {d} = data-set name (with a fine-tuned policy's adapter tag), as in the original repository:
    features/{m}_{d}_..._{split}            stage 1-2
    trained_model/value_model_{m}_{d}_{lr}[_variant]    stage 3 (variant: settings other than the paper's)
    response/{m}_{d}_{method part}[_prompting]    stage 4
    response/{m}_{d}_{split}_{method part}    a sweep's cells on its tuning split
"""
import os
import re
from typing import Optional

from utils.configs import stage3_defaults

# ----------------------------------------------------------------------------------------------------------------------
# Model and data set


def model_tag(model_name: str) -> str:
    """File-name-safe tag: paper names stay as they are, 'org/name' becomes 'org--name', a folder its base name."""
    if os.path.isdir(model_name):
        return os.path.basename(os.path.normpath(model_name))
    return model_name.replace("/", "--")


def adapter_tag(adapter: str, m: Optional[str] = None, d: Optional[str] = None) -> str:
    """What a fine-tuned policy (--adapter FOLDER) adds to output names: the folder's base name, without the
    '{m}_{d}_' that finetune_baseline.py puts in front (trained_model/smollm2_135M_demo_dpo_lora -> 'dpo_lora')."""
    name = os.path.basename(os.path.normpath(adapter))
    if m and d and name.startswith(f"{m}_{d}_") and len(name) > len(f"{m}_{d}_"):
        name = name[len(f"{m}_{d}_"):]
    return name


def named_dataset(config) -> str:
    """The data-set part of a stage's output names: {d}, or {d}_{adapter tag} for a fine-tuned policy, so that its
    features, value models and runs never take the base model's names (stage 4: {m}_{d}_{tag}_base, ...)."""
    adapter = getattr(config, "adapter", None)
    if not adapter:
        return config.dataset_name
    return f"{config.dataset_name}_{adapter_tag(adapter, model_tag(config.model_name), config.dataset_name)}"


# ----------------------------------------------------------------------------------------------------------------------
# Value models

# Stage-3 settings a value model's file name shows when they differ from the setting's default, and their codes
NAME_CODES = {"epochs": "ep", "batch_size": "bs", "num_layers": "L", "hidden_dim": "h", "weight_decay": "wd",
              "detach_target": "grad", "td_lambda": "td", "val_fraction": "vf", "early_stopping": "es",
              "standardize_rewards": "std", "margin_weight": "pm", "margin": "pmm", "seed": "s",
              "rounds": "r", "refit_step_size": "ra", "refit_num_updates": "rn"}
VARIANT = re.compile(r"(_[A-Za-z][^_]*)+")  # '_td1_vf0.1_es'; a checkpoint ends in '_{epoch}'


def value_model_variant(settings: dict, model_name: str, dataset_name: str) -> str:
    """'' for the setting's defaults (the paper's file name), else '_' + the changed settings, e.g. '_td1_vf0.1_es'.

    Booleans show as their code alone (detach_target False shows 'grad': the gradient flows through the target).
    """
    defaults = stage3_defaults(model_name, dataset_name)
    parts = []
    for key, code in NAME_CODES.items():
        value = settings.get(key, defaults[key])
        if value is None or value == defaults[key]:
            continue
        parts.append(code if isinstance(value, bool) else f"{code}{value:g}")
    return "".join(f"_{part}" for part in parts)


def value_model_stem(root: str, m: str, d: str, lr: float, variant: str = "", epoch: Optional[int] = None) -> str:
    """trained_model/value_model_{m}_{d}_{lr}: the original name; `variant` (value_model_variant) names settings
    other than the setting's defaults; `epoch` a checkpoint."""
    suffix = f"_{epoch}" if epoch is not None else ""
    return os.path.join(root, "trained_model", f"value_model_{m}_{d}_{lr}{variant}{suffix}")


def value_model_tag(stem: str, m: str, d: str) -> str:
    """What a run names its value model by: '{lr}{variant}' for one under its stage-3 name, else the file's name."""
    return os.path.basename(stem).removeprefix(f"value_model_{m}_{d}_")


# ----------------------------------------------------------------------------------------------------------------------
# Runs

def sweep_prefix(m: str, d: str, split: str) -> str:
    """A sweep's runs are {m}_{d}_{split}_...: never the names of the runs a table reports."""
    return f"{m}_{d}_{split}"


def run_name(prefix: str, method_part: str, prompting: bool = False) -> str:
    """A stage-4 run: {prefix}_{method part}[_prompting]. Base with prompting is '{prefix}_prompting'."""
    if method_part == "base" and prompting:
        return f"{prefix}_prompting"
    return f"{prefix}_{method_part}" + ("_prompting" if prompting else "")


def sweep_name(m: str, d: str, method: str) -> str:
    """results/{m}_{d}_sweep (RE-Control) or results/{m}_{d}_sweep_{method}."""
    return f"{m}_{d}_sweep" + ("" if method == "re_control" else f"_{method}")
