"""Stage 4: answer a split with any registered decoding method (utils.decoding): base, Prompting, RE-Control (and
+ Prompting) for inference_intervention.py, every method for decode_methods.py, sweep.py and compare_methods.py."""
import dataclasses
import glob
import os
import sys
from dataclasses import dataclass
from typing import Any, Optional, Tuple

from utils.config import as_dict, option
from utils.configs import DecodeConfig
from utils.data import ALIGNMENT_PROMPT, load_prompts
from utils.decoding import DecodingMethod, Resources, get_method
from utils.engines import Engine, open_engine
from utils.errors import UsageError
from utils.features import load_sequences
from utils.generation import answer_prompts
from utils.intervention import new_tally
from utils.io import adapter_meta_path, load_json, read_json_or_none, response_path, run_settings
from utils.models import load_policy_tokenizer, resolve_model
from utils.names import model_tag, named_dataset, run_name, value_model_stem
from utils.runs import refuse_overwrite, setup, written_with
from utils.sweep import chosen_for, read_choice
from utils.value_model import check_value_model, find_value_model, value_model_fingerprint


def find_policy_value_model(config: Any) -> Tuple[str, str]:
    """(stem, tag) of the value model a stage reads. With --adapter: one trained on the fine-tuned policy's states
    (stages 1-3 with the same --adapter), or the base model's reused by --value_model PATH (its file name then
    names the run)."""
    m, d = model_tag(config.model_name), named_dataset(config)
    stem, tag = find_value_model(config.output_dir, m, d, config.value_lr, config.value_model)
    if config.adapter and not config.value_model and not glob.glob(glob.escape(stem) + ".*"):
        base = value_model_stem(config.output_dir, m, config.dataset_name, config.value_lr)
        raise UsageError(f"no value model trained on the fine-tuned policy's states ({os.path.basename(stem)}); "
                         f"train one (stages 1-3 with --adapter) or reuse the base model's with --value_model "
                         f"{base}[_variant]")
    return stem, tag


def resolve_options(method: DecodingMethod, options: Any, config: DecodeConfig,
                    settings_from: Optional[str] = None) -> Any:
    """The method's options as the run uses them: the tuned ones from a sweep result (--settings_from), else the
    flags, else the setting's defaults (method.resolve). The one place --settings_from is read."""
    if settings_from:
        given = [name for name in method.tuned if getattr(options, name) != getattr(method.Options(), name)]
        if given:
            flag = method.Options.__dataclass_fields__[given[0]].metadata.get("flags") or (f"--{given[0]}",)
            raise UsageError(f"pass either --settings_from or {flag[0]}, not both")
        chosen, _ = read_choice(settings_from, method.name.removesuffix("_prompting"), config.model_name)
        options = dataclasses.replace(options, **chosen)
    return method.resolve(options, config.model_name, config.dataset_name)


@dataclass(frozen=True)
class RunNameSwitch:
    print_run_name: bool = option(False, "print the name of the run these flags write, and exit (what shell scripts "
                                  "read instead of building names)")


@dataclass(frozen=True)
class Stage4Args:
    """A stage-4 script's parsed flags: the stage's config, the method's options, and --print_run_name."""
    config: DecodeConfig
    options: Any
    print_run_name: bool = False


def run_stage4_script(parsed: Stage4Args) -> None:
    """What a stage-4 script does with its parsed flags: print the run's name (--print_run_name), or run it and end
    with the line 'run name: NAME'."""
    if parsed.print_run_name:
        print(plan_run(parsed.config, parsed.options).name)
        return
    setup(parsed.config)
    print(f"run name: {run_decode(parsed.config, parsed.options)}")


@dataclass(frozen=True)
class Plan:
    """A stage-4 run before it runs: its name, output, settings, the resolved options and the value model."""
    name: str
    out: str
    settings: dict
    options: Any
    value_model_stem: Optional[str]

    @property
    def done(self) -> bool:
        """Written before with the same settings (the run is then skipped)."""
        return written_with(self.out, self.settings)


def plan_run(config: DecodeConfig, options: Any = None, prefix: Optional[str] = None) -> Plan:
    """The Plan of stage 4 for config.method with `options` (None = the method's defaults); loads nothing. The run
    is named {prefix}_{method part}, {m}_{d} by default (a sweep's prefix holds its split: names.sweep_prefix)."""
    method = get_method(config.method)
    options = resolve_options(method, options if options is not None else method.Options(), config,
                              config.settings_from)
    stem, tag = find_policy_value_model(config) if method.uses_value_model else (None, None)
    fingerprint = value_model_fingerprint(stem) if stem else None
    provenance = {"value_model_sha256": fingerprint} if stem else {}
    if stem and config.settings_from:
        provenance["settings_chosen_for_this_value_model"] = check_chosen_for(config, stem, fingerprint)
    prefix = prefix or f"{model_tag(config.model_name)}_{named_dataset(config)}"
    name = run_name(prefix, method.run_part(options, tag), method.prompting or config.prompting)
    settings = run_settings(config, **{f"option_{k}": v for k, v in as_dict(options).items()},
                            value_model_file=stem and os.path.relpath(stem, config.output_dir), **provenance)
    return Plan(name, response_path(config.output_dir, name), settings, options, stem)


def check_chosen_for(config: DecodeConfig, stem: str, fingerprint: Optional[str]) -> Optional[bool]:
    """Whether the --settings_from sweep chose its setting for this very value model (by sha256); a setting chosen
    for another one is refused unless --allow_other_value_model. None while the value model does not exist yet."""
    if fingerprint is None:
        return None
    if chosen_for(config.settings_from, fingerprint):
        return True
    if not config.allow_other_value_model:
        swept_for = load_json(config.settings_from, stage_hint="sweep.py").get("value_model_sha256")
        what = "another value model" if swept_for else "a value model it does not fingerprint (an older sweep)"
        raise UsageError(f"--settings_from {config.settings_from} was chosen for {what}, not for "
                         f"{os.path.basename(stem)} (sha256 {fingerprint[:12]}); sweep this value model (sweep.py), "
                         f"or pass --allow_other_value_model True to use it anyway")
    return False


def adapter_description(config: Any) -> dict:
    """What a fine-tuned policy's response file records about its adapter (read by make_table.py)."""
    if not config.adapter:
        return {}
    meta = read_json_or_none(adapter_meta_path(config.adapter)) or {}
    return {"adapter": {"path": config.adapter, "method": meta.get("method"), "method_name": meta.get("method_name")}}


def run_decode(config: DecodeConfig, options: Any = None, engine: Optional[Engine] = None,
               resources: Optional[Resources] = None, prefix: Optional[str] = None, **loaded: Any) -> str:
    """Stage 4 for config.method with its options (method.Options; None = its defaults); returns the run's name.

    engine: the policy already open (utils.engines; or a transformers model); resources: a Resources to share
    between several runs (compare_methods.py); prefix: see plan_run. loaded: a reward_model already loaded. A run
    already written with the same settings is skipped.
    """
    method = get_method(config.method)
    if config.engine not in method.engines:
        raise UsageError(f"--method {method.name} works inside HF's decoding loop (a hook of its own or a per-token "
                         f"loop): run it with --engine {' or '.join(method.engines)}")
    if config.settings_from:  # a sweep result that does not fit fails first
        chosen = resolve_options(method, options or method.Options(), config, config.settings_from)
        print(", ".join(f"{k} {getattr(chosen, k):g}" for k in method.tuned) + f", as chosen in "
              f"{config.settings_from}", file=sys.stderr)
    spec = resolve_model(config.model_name, config.chat_template, config.adapter)
    if method.uses_value_model:  # then a value model of another LLM, before the defaults and the policy
        from utils.models import config_hidden_size
        resources = resources or Resources(engine=None, max_new_tokens=config.max_new_tokens)
        resources.use_value_model(find_policy_value_model(config)[0])
        check_value_model(resources.value_model(), config.model_name,
                          config_hidden_size(spec, config.trust_remote_code))
    plan = plan_run(config, options, prefix)
    name, out, settings, options, stem = plan.name, plan.out, plan.settings, plan.options, plan.value_model_stem
    if plan.done:
        print(f"{name}: already written with these settings -> {out} (skipped)")
        return name
    refuse_overwrite(out, settings, config.overwrite)
    # ------------------------------------------------------------------------------------------------------ load
    if isinstance(engine, Engine):
        tokenizer = engine.tokenizer
    else:
        tokenizer = load_policy_tokenizer(spec, config.trust_remote_code)
    prompting = method.prompting or config.prompting
    prompts = load_prompts(config, config.split, spec, tokenizer, ALIGNMENT_PROMPT if prompting else None)
    engine = open_engine(config, spec, tokenizer, engine)
    resources = _resources(config, engine, resources, loaded.get("reward_model"))
    # ------------------------------------------------------------------------------------------------------ run + save
    value_model = resources.loaded_value_model if method.uses_value_model else None
    resources.edit_tally = new_tally() if getattr(options, "gate", None) else None  # filled while decoding
    with method.session(resources, options) as decode_batch:
        answer_prompts(config, prompts, engine.tokenizer, engine.add_special_tokens, decode_batch,
                       f"generating ({method.label}, {engine.name})", out, settings, method=method.name,
                       label=method.label, **as_dict(options), prompting=prompting, split=config.split,
                       value_model=value_model.config if value_model is not None else None,
                       value_model_file=stem, **adapter_description(config),
                       **({"gate_tally": resources.edit_tally} if resources.edit_tally is not None else {}))
    return name


def _resources(config: DecodeConfig, engine: Engine, resources: Optional[Resources], reward_model: Any) -> Resources:
    """The run's Resources on `engine`: the given ones (their loaded models kept) or new ones."""
    resources = resources or Resources(engine=engine, max_new_tokens=config.max_new_tokens)
    resources.engine, resources.max_new_tokens, resources.use_cache = engine, config.max_new_tokens, config.use_cache
    if resources.loaded_value_model is not None:  # checked against the config's size; the engine's must agree
        check_value_model(resources.loaded_value_model, config.model_name, engine.hidden_size())
    if reward_model is not None:
        resources.loaded_reward_model = reward_model
    if resources.load_reward_model is None:
        def load_reward():
            from utils.rewards import load_reward_model
            if config.method == "args" and config.reward_model != "vader":
                print(f"note: ARGS scores text: each prefix is re-tokenized by {config.reward_model}'s tokenizer")
            return load_reward_model(config.reward_model, config.device, "auto", config.batch_size,
                                     config.trust_remote_code)
        resources.load_reward_model = load_reward
    if resources.load_probe_direction is None:
        def probe():
            from utils.methods.static_re import linear_probe_direction
            return linear_probe_direction(load_sequences(config.output_dir, model_tag(config.model_name),
                                                         named_dataset(config), "train"))
        resources.load_probe_direction = probe
    return resources
