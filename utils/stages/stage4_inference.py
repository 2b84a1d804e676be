"""Stage 4: answer a split with the policy, with RE-Control's edit (inference_intervention.py) or with a comparison
method (decode_methods.py)."""
import contextlib
import glob
import os

from utils.data import ALIGNMENT_PROMPT, load_prompts
from utils.errors import UsageError
from utils.features import load_sequences
from utils.generation import answer_prompts, decode_rows, generate_batch, generation_config
from utils.intervention import ValueIntervention, default_settings
from utils.io import response_path, run_settings
from utils.methods import (
    StaticIntervention,
    args_decode,
    best_of_n,
    cd_prefix_decode,
    keep_best,
    linear_probe_direction,
)
from utils.models import config_hidden_size, hidden_size, load_model_and_tokenizer, load_policy_tokenizer, resolve_model
from utils.names import model_tag, named_dataset, value_model_stem
from utils.rewards import load_reward_model
from utils.runs import refuse_overwrite
from utils.sweep import read_choice
from utils.value_model import check_value_model, find_value_model, load_value_model

METHODS = ("static_re", "best_of_n", "args", "cd_prefix")  # decode_methods.py
VLLM_METHODS = ("best_of_n",)  # the others edit or re-rank inside HF's loop

def run_name(args, m, value_tag=None):
    """{m}_{d}_base, {m}_{d}_prompting, {m}_{d}_{value tag}_{n}_{alpha}[_prompting]; with --adapter, {d} is
    {d}_{adapter tag} (utils.io.named_dataset), so a fine-tuned policy's runs never take the base model's names."""
    d = named_dataset(args)
    if args.use_intervention:
        name = f"{m}_{d}_{value_tag or args.value_lr}_{args.epochs}_{args.lr}"
    else:
        name = f"{m}_{d}_base" if not args.prompting else f"{m}_{d}"
    return name + ("_prompting" if args.prompting else "")


def find_policy_value_model(args, m):
    """(stem, tag) of RE-Control's value model. With --adapter: one trained on the fine-tuned policy's states
    (stages 1-3 with the same --adapter), or the base model's reused by --value_model PATH (its file name then
    names the run)."""
    d = named_dataset(args)
    stem, tag = find_value_model(args.output_dir, m, d, args.value_lr, args.value_model)
    if args.adapter and not args.value_model and not glob.glob(glob.escape(stem) + ".*"):
        base = value_model_stem(args.output_dir, m, args.dataset_name, args.value_lr)
        raise UsageError(f"no value model trained on the fine-tuned policy's states ({os.path.basename(stem)}); "
                         f"train one (stages 1-3 with --adapter) or reuse the base model's with --value_model "
                         f"{base}[_variant]")
    return stem, tag


def resolve_setting(args):
    """alpha (args.lr) and n (args.epochs): from --settings_from, else the flags, else the setting's defaults."""
    if args.settings_from:
        if args.lr is not None or args.epochs is not None:
            raise UsageError("pass either --settings_from or --lr/--epochs, not both")
        setting, _ = read_choice(args.settings_from, "re_control", args.model_name)
        args.lr, args.epochs = setting["step_size"], setting["num_updates"]
        print(f"step size {args.lr:g} and {args.epochs} updates, as chosen in {args.settings_from}")
    default_lr, default_epochs = default_settings(args.model_name, args.dataset_name)
    args.lr = default_lr if args.lr is None else args.lr
    args.epochs = default_epochs if args.epochs is None else args.epochs


def policy_and_prompts(args, spec, model=None, tokenizer=None):
    """The split's prompts (with the alignment prompt if --prompting) and the policy, loaded unless given: a
    transformers model, or with --engine vllm a utils.vllm_engine.VllmEngine."""
    tokenizer = tokenizer or load_policy_tokenizer(spec, args.trust_remote_code)
    prompts = load_prompts(args, args.split, spec, tokenizer, ALIGNMENT_PROMPT if args.prompting else None)
    if model is None and args.engine == "vllm":
        from utils.vllm_engine import open_engine
        model = open_engine(args, spec)
    if model is None:
        model, tokenizer = load_model_and_tokenizer(spec, args.device, args.dtype, args.trust_remote_code,
                                                    args.device_map, tokenizer)
    return model, tokenizer, prompts


def run_inference_intervention(args, model=None, tokenizer=None):
    """Stage 4 on parsed flags, with the policy already loaded if given; returns the run's name."""
    resolve_setting(args)
    m = model_tag(args.model_name)
    stem, value_tag = None, None
    if args.use_intervention:
        stem, value_tag = find_policy_value_model(args, m)
    name = run_name(args, m, value_tag)
    out = response_path(args.output_dir, name)
    settings = run_settings(args)
    refuse_overwrite(out, settings, args.overwrite)
    # ------------------------------------------------------------------------------------------------------ load
    spec = resolve_model(args.model_name, args.chat_template, args.adapter)
    value_model = None
    if args.use_intervention:
        value_model = load_value_model(stem)
        check_value_model(value_model, args.model_name, config_hidden_size(spec, args.trust_remote_code))
    model, tokenizer, prompts = policy_and_prompts(args, spec, model, tokenizer)
    # ------------------------------------------------------------------------------------------------------ run + save
    add_special = not spec.chat_template
    hook = contextlib.nullcontext()
    if args.engine == "vllm":
        from utils.vllm_engine import engine_decode

        def decode_batch(texts, _conversations):
            return engine_decode(model, tokenizer, texts, add_special, args.max_new_tokens, value_model=value_model,
                                 step_size=args.lr, num_updates=args.epochs)
    else:
        config = generation_config(model, tokenizer, args.max_new_tokens, use_cache=args.use_cache)
        if value_model is not None:
            check_value_model(value_model, args.model_name, hidden_size(model))
            hook = ValueIntervention(model, value_model.to(model.device), args.lr, args.epochs)

        def decode_batch(texts, _conversations):
            return decode_rows(tokenizer, *generate_batch(model, tokenizer, texts, config, add_special))
    method = "RE-Control" if value_model is not None else "base"
    with hook:
        answer_prompts(args, prompts, tokenizer, add_special, decode_batch, f"generating ({method}, {args.engine})",
                       out, settings, method=method, step_size=args.lr if value_model else None,
                       num_updates=args.epochs if value_model else None, prompting=args.prompting, split=args.split,
                       value_model=value_model.config if value_model else None, **adapter_description(args))
    return name


def adapter_description(args):
    """What a fine-tuned policy's response file records about its adapter (read by make_table.py)."""
    if not args.adapter:
        return {}
    from utils.io import adapter_meta_path, read_json_or_none
    meta = read_json_or_none(adapter_meta_path(args.adapter)) or {}
    return {"adapter": {"path": args.adapter, "method": meta.get("method"), "method_name": meta.get("method_name")}}


def method_run_name(args, m, value_tag=None):
    settings = {"static_re": f"{args.strength}", "best_of_n": f"{args.num_candidates}",
                "args": f"{args.top_k}_{args.weight}",
                "cd_prefix": f"{value_tag}_{args.num_candidates}_{args.block_size}"}
    return f"{m}_{named_dataset(args)}_{args.method}_{settings[args.method]}" + ("_prompting" if args.prompting else "")


def run_decode_method(args, model=None, tokenizer=None, reward_model=None):
    """A comparison method on parsed flags, with the policy (and Best-of-N's or ARGS's reward model) already loaded
    if given; returns the run's name."""
    if args.engine == "vllm" and args.method not in VLLM_METHODS:
        raise UsageError(f"--method {args.method} works inside HF's decoding loop (a hook or a per-token choice); "
                         f"run it with --engine hf (vLLM runs {', '.join(VLLM_METHODS)} here, and base, Prompting "
                         f"and RE-Control in inference_intervention.py)")
    m = model_tag(args.model_name)
    stem, value_tag = None, None
    if args.method == "cd_prefix":
        stem, value_tag = find_policy_value_model(args, m)
    name = method_run_name(args, m, value_tag)
    out = response_path(args.output_dir, name)
    settings = run_settings(args)
    refuse_overwrite(out, settings, args.overwrite)
    # ------------------------------------------------------------------------------------------------------ load
    spec = resolve_model(args.model_name, args.chat_template, args.adapter)
    model, tokenizer, prompts = policy_and_prompts(args, spec, model, tokenizer)
    add_special = not spec.chat_template
    hook, value_model = None, None
    if args.method == "static_re":
        direction = linear_probe_direction(load_sequences(args.output_dir, m, named_dataset(args), "train"))
        hook = StaticIntervention(model, direction, args.strength)
    if args.method == "cd_prefix":
        value_model = load_value_model(stem)
        check_value_model(value_model, args.model_name, hidden_size(model))
        value_model.to(model.device)
    if args.method in ("best_of_n", "args"):
        reward_model = reward_model or load_reward_model(args.reward_model, args.device, "auto", args.batch_size,
                                                         args.trust_remote_code)
        if args.method == "args" and args.reward_model != "vader":
            print(f"note: ARGS scores text: each prefix is re-tokenized by {args.reward_model}'s tokenizer")
    # ------------------------------------------------------------------------------------------------------ run + save
    def decode_batch(texts, conversations):
        if args.engine == "vllm":  # Best-of-N: the candidates from vLLM, the choice as on the HF path
            from utils.vllm_engine import engine_decode
            candidates = engine_decode(model, tokenizer, texts, add_special, args.max_new_tokens,
                                       args.num_candidates, do_sample=True, temperature=args.temperature, top_k=50,
                                       top_p=args.top_p)
            return keep_best(*candidates, conversations, reward_model, args.num_candidates)
        if args.method == "static_re":
            config = generation_config(model, tokenizer, args.max_new_tokens)
            return decode_rows(tokenizer, *generate_batch(model, tokenizer, texts, config, add_special))
        if args.method == "best_of_n":
            return best_of_n(model, tokenizer, texts, conversations, reward_model, args.num_candidates,
                             args.temperature, args.top_p, 50, args.max_new_tokens, add_special)
        if args.method == "args":
            return args_decode(model, tokenizer, texts, conversations, reward_model, args.top_k, args.weight,
                               args.max_new_tokens, add_special)
        return cd_prefix_decode(model, tokenizer, texts, value_model, args.num_candidates, args.block_size,
                                args.max_new_tokens, args.temperature, 50, args.top_p, add_special)
    with hook or contextlib.nullcontext():
        answer_prompts(args, prompts, tokenizer, add_special, decode_batch, f"generating ({args.method})", out,
                       settings, method=args.method, prompting=args.prompting, split=args.split,
                       **adapter_description(args))
    return name


