"""RE-Control's shared code, and its Python API (see the README's "Use from Python").

The stage scripts call into these modules. The public API, imported on first use:
    load_policy, Policy            the policy LLM with its tokenizer and prompt format
    load_value_model, ValueModel   a value model file (safetensors with its architecture) and the MLP
    load_reward_model              'vader', UltraRM or a sequence-classification reward model
    ValueIntervention              RE-Control's edit: a forward hook on the final norm, active inside `with`
    ActivationCapture              stage 1's recording hook, active inside `with`
    record_states, RecordedStates  stage 1 in memory: packed o_t rows and their lengths
    train_value_model              stage 3 on tensors, with a ValueTrainingConfig
    generate                       one entry for every decoding method
    read_choice                    the (alpha, n) or strength a sweep chose on its tuning split
"""
import importlib

_API = {"Policy": "utils.api", "RecordedStates": "utils.api", "generate": "utils.api", "load_policy": "utils.api",
        "record_states": "utils.api", "train_value_model": "utils.api", "ActivationCapture": "utils.intervention",
        "ValueIntervention": "utils.intervention", "load_reward_model": "utils.rewards", "read_choice": "utils.sweep",
        "ValueTrainingConfig": "utils.training", "ValueModel": "utils.value_model",
        "load_value_model": "utils.value_model"}
__all__ = sorted(_API)


def __getattr__(name):
    if name in _API:  # lazily: the stage scripts import utils.cli without loading torch and transformers twice over
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'utils' has no attribute {name!r}")


def __dir__():
    return __all__
