"""RE-Control behind vLLM's OpenAI-compatible server (serve.py): value models named at start, the edit chosen per
request.

A request chooses its edit with vLLM's per-request extra arguments (`extra_body` in the openai client):

    {"vllm_xargs": {"value_model": "helpful", "step_size": 3.0, "num_updates": 10}}

step_size (alpha) and num_updates (n) may be left out: the value model's default is used (a sweep's choice given at
start, else the paper's setting for the LLM and data set the value model was trained on). "gate": "entropy" or
"value" with "gate_threshold": tau edits only the rows that stage 4's --gate would (utils.intervention.Gate).
A request without
`value_model` is answered plainly. request_edit() checks a request in the API server (RequestCheck.validate_params:
HTTP 400 on bad input) and resolves it again in the worker (utils.vllm_engine.ReControlExtension), which edits each
row of a batch with its own request's setting.
"""
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

from utils.errors import UsageError, first_line

KEYS = ("value_model", "step_size", "num_updates", "gate", "gate_threshold")
MISSPELLED = {"alpha": "step_size", "lr": "step_size", "epochs": "num_updates", "n_updates": "num_updates",
              "value_model_name": "value_model", "tau": "gate_threshold", "threshold": "gate_threshold"}
# (value model name, step size, number of updates, gate: None or (signal, threshold))
RequestedEdit = Tuple[str, float, int, Optional[Tuple[str, float]]]


class RequestError(ValueError):
    """A request's edit is not valid: vLLM answers it with HTTP 400 and this message."""


@dataclass(frozen=True)
class ServedValueModel:
    """A value model loaded at start: its file (stem), weights' sha256 and the defaults a request may leave out."""
    name: str
    stem: str
    sha256: str
    step_size: Optional[float]
    num_updates: Optional[int]
    defaults_from: str  # where the defaults come from (the start message prints it)


@dataclass(frozen=True)
class ServedModels:
    """What the server offers: its value models by name and the cap on num_updates."""
    value_models: Dict[str, ServedValueModel] = field(default_factory=dict)
    max_num_updates: int = 200

    def to_dict(self) -> dict:
        """Plain data: what crosses vLLM's RPC to the workers (its msgpack channel does not keep dataclasses)."""
        return {"max_num_updates": self.max_num_updates,
                "value_models": {name: vars(model) for name, model in self.value_models.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ServedModels":
        return cls({name: ServedValueModel(**model) for name, model in data["value_models"].items()},
                   int(data["max_num_updates"]))


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"vllm_xargs.{key} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise RequestError(f"vllm_xargs.{key} must be a finite number >= 0, got {value!r}")
    return float(value)


def request_edit(extra_args: Optional[Mapping[str, Any]], served: ServedModels) -> Optional[RequestedEdit]:
    """(value model, step size, number of updates, gate) a request asks for, None for a plain answer (no value_model,
    or an edit that changes nothing: alpha 0 or n 0). Raises RequestError on bad input; keys of vLLM's own (session_id,
    kv_transfer_params, ...) are left alone."""
    extra_args = extra_args or {}
    for wrong, right in MISSPELLED.items():
        if wrong in extra_args:
            raise RequestError(f"vllm_xargs.{wrong} is not a field: did you mean {right}?")
    name = extra_args.get("value_model")
    if name is None:
        given = [k for k in KEYS[1:] if k in extra_args]
        if given:
            raise RequestError(f"vllm_xargs.{given[0]} needs vllm_xargs.value_model (one of "
                               f"{', '.join(served.value_models) or 'none: this server has no value model'})")
        return None
    if not isinstance(name, str):
        raise RequestError(f"vllm_xargs.value_model must be a string naming a value model, got {name!r}")
    value_model = served.value_models.get(name)
    if value_model is None:
        raise RequestError(f"unknown value model {name!r}: this server has "
                           f"{', '.join(served.value_models) or 'none'}")
    step_size = extra_args.get("step_size", value_model.step_size)
    num_updates = extra_args.get("num_updates", value_model.num_updates)
    for key, value in (("step_size", step_size), ("num_updates", num_updates)):
        if value is None:
            raise RequestError(f"value model {name!r} has no default {key}: give vllm_xargs.{key}")
    step_size = _number("step_size", step_size)
    if isinstance(num_updates, float) and num_updates.is_integer():
        num_updates = int(num_updates)
    if isinstance(num_updates, bool) or not isinstance(num_updates, int):
        raise RequestError(f"vllm_xargs.num_updates must be an integer, got {num_updates!r}")
    if not 0 <= num_updates <= served.max_num_updates:
        raise RequestError(f"vllm_xargs.num_updates must be between 0 and {served.max_num_updates} (this server's "
                           f"--max_num_updates), got {num_updates}")
    gate = request_gate(extra_args)
    if step_size == 0 or num_updates == 0:
        return None
    return name, step_size, num_updates, gate


def request_gate(extra_args: Mapping[str, Any]) -> Optional[Tuple[str, float]]:
    """(signal, threshold) of a request's gate, None for none ("gate" left out, null or "off")."""
    from utils.intervention import GATE_SIGNALS
    signal, threshold = extra_args.get("gate"), extra_args.get("gate_threshold")
    if signal in (None, "off"):
        if threshold is not None:
            raise RequestError(f"vllm_xargs.gate_threshold needs vllm_xargs.gate ({' or '.join(GATE_SIGNALS)})")
        return None
    if signal not in GATE_SIGNALS:
        raise RequestError(f"vllm_xargs.gate must be {', '.join(GATE_SIGNALS)} or off, got {signal!r}")
    if threshold is None:
        raise RequestError(f"vllm_xargs.gate {signal} needs vllm_xargs.gate_threshold (tau)")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise RequestError(f"vllm_xargs.gate_threshold must be a finite number, got {threshold!r}")
    return signal, float(threshold)


# ----------------------------------------------------------------------------------------------------------------------
# At start (serve.py)

def parse_named(specs, flag: str) -> Dict[str, str]:
    """['helpful=trained_model/vm', ...] -> {'helpful': 'trained_model/vm'}; a bad or repeated name is a UsageError."""
    named = {}
    for spec in specs or ():
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"{flag} {spec!r}: write NAME=PATH, e.g. {flag} helpful=trained_model/value_model_x")
        if not name.replace("_", "").replace("-", "").replace(".", "").isalnum():
            raise UsageError(f"{flag} {spec!r}: a name has letters, digits, '_', '-' and '.' only")
        if name in named:
            raise UsageError(f"{flag}: the name {name!r} is given twice")
        named[name] = path
    return named


def load_served(value_models: Mapping[str, str], settings_from: Mapping[str, str], model_name: str,
                hidden: Optional[int], max_num_updates: int):
    """(ServedModels, {name: ValueModel}) for the value models named at start, each checked against the served LLM
    (hidden size, and the LLM it was trained on); defaults from --settings_from NAME=SWEEP (chosen for this very
    value model) or the paper's setting for the value model's LLM and data set. A problem is one UsageError."""
    from utils.paper import PAPER_SETTINGS
    from utils.sweep import chosen_for, read_choice
    from utils.value_model import check_value_model, load_value_model, value_model_fingerprint
    unknown = sorted(set(settings_from) - set(value_models))
    if unknown:
        raise UsageError(f"--settings_from {unknown[0]}=...: no --value_model {unknown[0]}=PATH is given")
    served, loaded = {}, {}
    for name, path in value_models.items():
        stem = path.removesuffix(".safetensors").removesuffix(".pth")
        try:
            model = load_value_model(stem)
            check_value_model(model, model_name, hidden)
        except UsageError as err:
            raise UsageError(f"--value_model {name}={path}: {err}") from None
        sha256 = value_model_fingerprint(stem)
        if name in settings_from:
            sweep = settings_from[name]
            chosen, _ = read_choice(sweep, "re_control", model_name)
            if not chosen_for(sweep, sha256):
                raise UsageError(f"--settings_from {name}={sweep} was chosen for another value model, not for "
                                 f"{os.path.basename(stem)} (sha256 {sha256[:12]}); sweep this value model (sweep.py)")
            step_size, num_updates, source = chosen["step_size"], chosen["num_updates"], sweep
        else:
            key = (model.config.get("llm"), model.config.get("dataset"))
            step_size, num_updates = PAPER_SETTINGS.get(key, (None, None))
            source = f"the setting for {key[0]} on {key[1]}" if key in PAPER_SETTINGS else "none (requests give them)"
        if num_updates is not None and num_updates > max_num_updates:
            raise UsageError(f"--value_model {name}: its default num_updates {num_updates} is above "
                             f"--max_num_updates {max_num_updates}; raise the cap")
        served[name] = ServedValueModel(name, stem, sha256, step_size, num_updates, source)
        loaded[name] = model
    return ServedModels(served, max_num_updates), loaded


# What the API server's process checks requests against; set by serve.py before the server starts.
SERVED: Optional[ServedModels] = None


def paper_chat_template(begin: str, bos_token: str = "") -> str:
    """A Jinja chat template that writes utils.data.format_prompt's plain format (the paper's 'User: ...\\nAssistant:'
    text; several turns as HH-RLHF dialogues; a system message first), for /v1/chat/completions on a model served
    without its own chat template. `bos_token`: what the tokenizer puts first on its own (chat prompts are tokenized
    without special tokens). Newlines are written as expressions: chat templates render with trim_blocks."""
    def literal(text):
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"
    return ("{%- set system = messages | selectattr('role', 'equalto', 'system') | list -%}"
            "{%- set turns = messages | rejectattr('role', 'equalto', 'system') | list -%}"
            "{{ " + literal(bos_token) + " }}"
            "{% if system %}{{ system[0]['content'] }}{{ '\\n\\n' }}{% endif %}"
            "{% if turns | length == 1 %}{{ " + literal(begin) + " }}{{ turns[0]['content'] }}{{ '\\nAssistant:' }}"
            "{% else %}{% for m in turns %}{{ '\\n\\n' }}{{ " + literal(begin) + " if m['role'] == 'user' else "
            "'Assistant: ' }}{{ m['content'] }}{% endfor %}{{ '\\n\\nAssistant:' }}{% endif %}")


def _validation_error(message: str):
    from vllm.exceptions import VLLMValidationError
    return VLLMValidationError(message)


try:
    from vllm.v1.sample.logits_processor import LogitsProcessor as _LogitsProcessor
except ImportError:  # the vLLM extra is not installed: request_edit and the start checks still work
    _LogitsProcessor = object


class RequestCheck(_LogitsProcessor):
    """Loaded by vLLM (--logits-processors utils.serving:RequestCheck) for its validate_params hook: every request's
    vllm_xargs is checked in the API server before it is admitted, so bad input is HTTP 400 and never reaches the
    engine. It leaves the logits as they are."""

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        if SERVED is None:
            raise _validation_error("this server was not started by serve.py: it has no value models")
        try:
            request_edit(sampling_params.extra_args, SERVED)
        except RequestError as err:
            raise _validation_error(str(err)) from None

    def __init__(self, vllm_config, device, is_pin_memory) -> None:  # noqa: ARG002 (vLLM's signature)
        pass

    def apply(self, logits):
        return logits

    def is_argmax_invariant(self) -> bool:
        return True

    def update_state(self, batch_update) -> None:  # noqa: ARG002
        pass


# ----------------------------------------------------------------------------------------------------------------------
# The server: vLLM's own (vllm.entrypoints.launchers), with the value models sent to the workers before it listens

async def run_server(args, served: ServedModels, value_models: Mapping[str, Any]) -> None:
    """vLLM's run_server (launchers.api_server.entry) with one step added: after the engine starts and before the
    server listens, every worker gets the value models (ReControlExtension.recontrol_serve)."""
    import signal

    import torch
    from vllm.entrypoints.launchers.api_server.entry import build_and_serve, build_async_engine_client
    from vllm.entrypoints.launchers.launcher import setup_server

    from utils.vllm_engine import pack

    def interrupt_start(*_) -> None:  # as vLLM does: SIGTERM before uvicorn takes over ends the start
        raise KeyboardInterrupt("terminated")

    signal.signal(signal.SIGTERM, interrupt_start)
    listen_address, sock = setup_server(args, reuse_port=False)
    weights = {name: [(pack(w), pack(b)) for w, b in model.linear_weights(torch.float32, "cpu")]
               for name, model in value_models.items()}
    async with build_async_engine_client(args) as engine_client:
        await engine_client.collective_rpc("recontrol_serve", args=(served.to_dict(), weights))
        shutdown_task = await build_and_serve(engine_client, listen_address, sock, args)
    try:
        await shutdown_task
    finally:
        sock.close()


# Flags of vLLM's server that serve.py sets itself, or that the per-request edit does not support
OWNED_FLAGS = {
    "--model": "pass --model_name", "--worker-extension-cls": "serve.py sets it",
    "--logits-processors": "serve.py sets it (utils.serving:RequestCheck)",
    "--speculative-config": "RE-Control edits one row per request per step; speculative decoding is not supported",
    "--api-server-count": "serve.py runs one API server process; scale with replicas behind a load balancer",
    "--data-parallel-size": "run one serve.py per replica behind a load balancer (docs/serving.md)",
    "-dp": "run one serve.py per replica behind a load balancer (docs/serving.md)",
    "--dtype": "pass --dtype", "--tensor-parallel-size": "pass --tensor_parallel_size",
    "-tp": "pass --tensor_parallel_size", "--pipeline-parallel-size": "pass --pipeline_parallel_size",
    "-pp": "pass --pipeline_parallel_size", "--gpu-memory-utilization": "pass --gpu_memory_utilization",
    "--trust-remote-code": "pass --trust_remote_code True", "--seed": "pass --seed",
}


def refuse_owned_flags(passed: Any) -> None:
    """A UsageError for a vLLM flag that serve.py sets itself or that the edit does not support."""
    for token in passed:
        flag = token.split("=", 1)[0]
        if flag in OWNED_FLAGS:
            raise UsageError(f"{flag}: {OWNED_FLAGS[flag]}")


def vllm_server_argv(config: Any, spec: Any, passed: Any) -> list:
    """vLLM's server flags for `config` (its ModelSpec `spec`) followed by the `passed` ones: the policy, its dtype
    as the stages resolve it, parallelism, memory share, the worker extension, the request check, and the paper's
    prompt format as the chat template where the model is served without its own."""
    from utils.models import embedded_model_folder, load_tokenizer, resolve_device, resolve_dtype
    from utils.vllm_engine import EXTENSION, memory_share
    path = embedded_model_folder() if spec.embedded else spec.path
    dtype = str(resolve_dtype(config.dtype, resolve_device("auto"))).removeprefix("torch.")
    argv = ["--model", path, "--served-model-name", config.model_name, "--dtype", dtype, "--seed", str(config.seed),
            "--tensor-parallel-size", str(config.tensor_parallel_size),
            "--pipeline-parallel-size", str(config.pipeline_parallel_size),
            "--gpu-memory-utilization", str(memory_share(config.gpu_memory_utilization)),
            "--worker-extension-cls", EXTENSION, "--logits-processors", "utils.serving:RequestCheck"]
    if config.trust_remote_code:
        argv.append("--trust-remote-code")
    flags = {t.split("=", 1)[0] for t in passed}
    if not spec.chat_template and not flags & {"--chat-template", "--skip-tokenizer-init"}:
        argv += ["--chat-template", paper_chat_template(spec.begin, special_prefix(load_tokenizer(
            path, config.trust_remote_code)))]
    return argv + list(passed)


def special_prefix(tokenizer: Any) -> str:
    """The text of the special tokens a tokenizer puts before a prompt on its own (a BOS, or nothing)."""
    plain = tokenizer("User", add_special_tokens=False)["input_ids"]
    full = tokenizer("User", add_special_tokens=True)["input_ids"]
    start = next((i for i in range(len(full) - len(plain) + 1) if full[i:i + len(plain)] == plain), 0)
    return tokenizer.decode(full[:start])


def parse_vllm_args(argv: list) -> Any:
    """vLLM's server flags parsed and checked by vLLM's own parser; a bad one is one line (exit status 2)."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    class Parser(FlexibleArgumentParser):
        def error(self, message):
            raise UsageError(f"{message} (a vLLM server flag: see `vllm serve --help`)")

    args = make_arg_parser(Parser(description="vLLM's OpenAI-compatible server")).parse_args(argv)
    try:
        validate_parsed_serve_args(args)
        AsyncEngineArgs.from_cli_args(args).create_engine_config()  # once more when the engine starts: cheap
    except (TypeError, ValueError) as err:
        errors = getattr(err, "errors", None)  # pydantic's ValidationError: the first problem, without its layout
        message = errors()[0]["msg"] if callable(errors) and errors() else first_line(err)
        raise UsageError(f"{message} (vLLM's server flags)") from None
    return args


def describe_served(served: ServedModels) -> str:
    lines = [f"value models (requests name them in vllm_xargs.value_model; num_updates <= {served.max_num_updates}):"]
    for model in served.value_models.values():
        default = (f"step_size {model.step_size:g}, num_updates {model.num_updates}" if model.step_size is not None
                   else "no default setting (requests give step_size and num_updates)")
        lines.append(f"  {model.name}: {model.stem} (sha256 {model.sha256[:12]}); {default} "
                     f"[{model.defaults_from}]")
    return "\n".join(lines)
