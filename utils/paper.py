"""The paper's settings, in one place: the step size and number of updates of each setting, the value model's
shape and learning rate (Kong et al. 2024, section 5), and the embedded demo's choice."""
from typing import Optional, Tuple

from utils.errors import UsageError

# Adam learning rate of the value model (stage 3's --lr) and so the --value_lr every reading script defaults to
VALUE_LR = 1e-4

# Step size alpha and number of updates n per (LLM, data set); the demo's was chosen on its tuning split
PAPER_SETTINGS = {
    ("vicuna_7B", "hh_rlhf"): (0.5, 30),
    ("falcon_7B", "hh_rlhf"): (0.2, 200),
    ("vicuna_7B", "shp"): (1.0, 50),
    ("llama3_8B", "shp"): (1.0, 30),
    ("smollm2_135M", "demo"): (3.0, 10),  # the paper's rule on the demo's tuning split: results/*_demo_sweep.json
}

# The value model's shape: h = 4096 for the paper's LLMs, 3 Linear layers for Vicuna on HH-RLHF, 2 elsewhere
PAPER_LLMS = ("vicuna_7B", "falcon_7B", "llama3_8B")
PAPER_HIDDEN_DIM = 4096


def default_settings(model_name: str, dataset_name: str) -> Tuple[float, int]:
    """(step size, number of updates) of a setting the paper (or the demo's sweep) chose; other settings have no
    default, since a step size fits one value model: pass it, or read a sweep's choice."""
    if (model_name, dataset_name) in PAPER_SETTINGS:
        return PAPER_SETTINGS[(model_name, dataset_name)]
    raise UsageError(f"no step size and number of updates are known for {model_name} on {dataset_name}: pass --lr "
                     f"and --epochs, or --settings_from a sweep (sweep.py) on a tuning split")


def default_shape(model_name: str, dataset_name: str) -> Tuple[int, Optional[int]]:
    """(num_layers, hidden_dim) of the setting's value model; hidden_dim None = the states' size."""
    num_layers = 3 if (model_name, dataset_name) == ("vicuna_7B", "hh_rlhf") else 2
    return num_layers, PAPER_HIDDEN_DIM if model_name in PAPER_LLMS else None
