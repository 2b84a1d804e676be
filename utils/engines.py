"""One decoder interface over the two engines: HF (transformers' generate, the reference) and vLLM.

    engine = open_engine(config, spec, tokenizer)          # config.engine: 'hf' or 'vllm'
    with engine.editing(Edit(value_model, 3.0, 10)):       # RE-Control's edit, or nothing with edit=None
        responses, results = engine.decode(texts, max_new_tokens=40)
    prompt_ids, tokens, mask, states = engine.capture(texts, 40, sampling, batch_index=0)   # stage 1

A decoding method that needs HF's model itself (a hook of its own, a per-token loop) names the engines it runs on
(utils.decoding.DecodingMethod.engines) and reads `engine.model`. Every vLLM internal is in utils/vllm_engine.py.
"""
import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import torch

from utils.errors import UsageError
from utils.generation import decode_rows, generate_batch, generation_config
from utils.intervention import ActivationCapture, ValueIntervention
from utils.runs import seed_batch

ENGINES = ("hf", "vllm")


@dataclass(frozen=True)
class Edit:
    """RE-Control's control signal: num_updates gradient steps of size step_size uphill on value_model; with a gate
    (utils.intervention.Gate) only on the rows it picks, counted in `tally` (utils.intervention.new_tally())."""
    value_model: torch.nn.Module
    step_size: float
    num_updates: int
    gate: Any = None
    tally: Optional[dict] = None


@dataclass(frozen=True)
class Sampling:
    """Sampled decoding (temperature, top-k, top-p); None where a stage decodes greedily."""
    temperature: float = 0.7
    top_k: int = 50
    top_p: float = 0.95


Rows = Tuple[List[str], List[str]]  # (responses = prompt + generation, results = generation)


class Engine:
    """What every engine does: decode a batch (optionally with an edit or sampled) and capture stage 1's states."""
    name = ""

    def __init__(self, tokenizer: Any, add_special_tokens: bool):
        self.tokenizer = tokenizer
        self.add_special_tokens = add_special_tokens

    def editing(self, edit: Optional[Edit]) -> contextlib.AbstractContextManager:
        raise NotImplementedError

    def decode(self, texts: Sequence[str], max_new_tokens: int, sampling: Optional[Sampling] = None,
               num_samples: int = 1, use_cache: bool = True) -> Rows:
        """num_samples responses per text (in a row), greedy unless `sampling`."""
        raise NotImplementedError

    def reusing_prefill(self, max_bytes: int) -> contextlib.AbstractContextManager:  # noqa: ARG002
        """A `with` around decodes that answer the same prompt batches (a sweep's cells): HF does each batch's
        prefill once and keeps up to `max_bytes` of it (utils.prefill); vLLM has its own prefix cache."""
        return contextlib.nullcontext()

    def capturing(self, dtype: torch.dtype) -> contextlib.AbstractContextManager:  # noqa: ARG002
        """A `with` around many capture() calls (HF keeps one hook on the final norm for all of them)."""
        return contextlib.nullcontext()

    def capture(self, texts: Sequence[str], max_new_tokens: int, sampling: Optional[Sampling], num_samples: int,
                seed: int, batch_index: int, batch_size: int, dtype: torch.dtype):
        """Stage 1: (prompt ids per row, tokens [rows, T], valid mask, the valid steps' states back to back); batch
        `batch_index` of `batch_size` prompts is seeded on its own, so resumed and sharded runs sample the same."""
        raise NotImplementedError

    def hidden_size(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        pass


class HFEngine(Engine):
    """transformers' generate with forward hooks on the final norm (utils.intervention)."""
    name = "hf"

    def __init__(self, model: torch.nn.Module, tokenizer: Any, add_special_tokens: bool):
        super().__init__(tokenizer, add_special_tokens)
        self.model = model
        self._capture = None

    @contextlib.contextmanager
    def editing(self, edit: Optional[Edit]) -> Iterator[None]:
        if edit is None:
            yield
            return
        with ValueIntervention(self.model, edit.value_model.to(self.model.device), edit.step_size, edit.num_updates,
                               gate=edit.gate, tally=edit.tally):
            yield

    def decode(self, texts, max_new_tokens, sampling=None, num_samples=1, use_cache=True):
        config = generation_config(self.model, self.tokenizer, max_new_tokens, do_sample=sampling is not None,
                                   num_return_sequences=num_samples, use_cache=use_cache,
                                   **(vars(sampling) if sampling else {}))
        return decode_rows(self.tokenizer, *generate_batch(self.model, self.tokenizer, texts, config,
                                                           self.add_special_tokens))

    def reusing_prefill(self, max_bytes):
        from utils.prefill import PrefillReuse
        return PrefillReuse(self.model, max_bytes)

    @contextlib.contextmanager
    def capturing(self, dtype: torch.dtype) -> Iterator[None]:
        """Keep the final-norm states inside the `with` (stage 1 wraps all its batches in one)."""
        with ActivationCapture(self.model, dtype=dtype) as self._capture:
            yield
        self._capture = None

    def capture(self, texts, max_new_tokens, sampling, num_samples, seed, batch_index, batch_size,  # noqa: ARG002
                dtype):
        config = generation_config(self.model, self.tokenizer, max_new_tokens, do_sample=num_samples > 1,
                                   num_return_sequences=num_samples, **vars(sampling or Sampling()))
        seed_batch(seed, batch_index)
        with contextlib.nullcontext() if self._capture else self.capturing(dtype):
            prompt_ids, tokens, mask = generate_batch(self.model, self.tokenizer, texts, config,
                                                      self.add_special_tokens)
            states = self._capture.pop()
        assert states.shape[1] == tokens.shape[1], "one captured state per generated token"
        return prompt_ids, tokens, mask, states[mask.to(states.device)].cpu()

    def hidden_size(self):
        from utils.models import hidden_size
        return hidden_size(self.model)


def open_engine(config: Any, spec: Any, tokenizer: Any, model: Optional[torch.nn.Module] = None) -> Engine:
    """The policy behind `config.engine` (a generating stage's options); `model`: one already open (an Engine, an HF
    model, or with --engine vllm a utils.vllm_engine.VllmEngine)."""
    add_special = not spec.chat_template  # a chat template writes its own special tokens
    if isinstance(model, Engine):
        return model
    if config.engine not in ENGINES:
        raise UsageError(f"unknown engine {config.engine!r}; choose one of {', '.join(ENGINES)}")
    if config.engine == "vllm":
        from utils.vllm_engine import VllmDecoder
        if model is None:
            return VllmDecoder.from_config(config, spec, tokenizer, add_special)
        from utils.models import config_hidden_size
        return VllmDecoder(model, tokenizer, add_special, config_hidden_size(spec, config.trust_remote_code))
    if model is None:
        from utils.models import load_model_and_tokenizer
        model, tokenizer = load_model_and_tokenizer(spec, config.device, config.dtype, config.trust_remote_code,
                                                    config.device_map, tokenizer)
    return HFEngine(model, tokenizer, add_special)
