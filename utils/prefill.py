"""A prompt batch's prefill done once for many decodes: what makes a sweep's cells cheaper on the HF engine.

Every cell of a sweep (sweep.py) answers the same prompt batches; only the edit on the final norm's output differs.
The forward pass over a prompt (the prefill: a third of a cell's time on the demo) does not depend on that edit: it
gives the key/value cache and the final norm's input, and the edit acts after both. PrefillReuse keeps those two
after a batch's first prefill and answers a later prefill of the same tokens from them: the cache is copied and the
final norm is run again on its kept input, so its hooks (the edit, the gate, a capture) fire on the same tensor as
before. The decoding steps that follow are computed as usual, so each cell's tokens are the ones it gets alone
(tests/test_prefill_reuse.py checks this token for token).

It steps aside (computes the prefill as usual) wherever a kept result could differ: a module other than the final
norm hooked, changed weights, a cache other than transformers' DynamicCache, outputs asked for beyond the last hidden
state, a sliding window that has already dropped part of the prompt, or no room left under `max_bytes`.
"""
from typing import Any, Dict, List, Tuple

import torch

from utils.models import find_final_norm

Kept = Tuple[torch.Tensor, List[Tuple[torch.Tensor, torch.Tensor]]]  # (final norm's input, [(keys, values)] per layer)
KEY_KWARGS = ("input_ids", "attention_mask", "position_ids", "cache_position")
PLAIN_KWARGS = set(KEY_KWARGS) | {"past_key_values", "use_cache", "inputs_embeds", "return_dict"}


def _tensor_key(tensor: Any) -> Any:
    if tensor is None:
        return None
    return str(tensor.dtype), tuple(tensor.shape), tensor.detach().cpu().numpy().tobytes()


class PrefillReuse:
    """Inside `with PrefillReuse(model, max_bytes)`, a prefill of prompt tokens seen before is answered from memory
    (see the module's docstring); `hits` counts those, `kept_bytes` what is held. Does nothing for a model whose
    final norm is not inside its decoder (model.get_decoder())."""

    def __init__(self, model: torch.nn.Module, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self.norm = find_final_norm(model)
        self.decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
        if self.decoder is not None and not any(m is self.norm for m in self.decoder.modules()):
            self.decoder = None
        self.kept: Dict[Any, Kept] = {}
        self.kept_bytes = 0
        self.hits = 0
        self._saved = None

    # ---------------------------------------------------------------------------------------------------- checks
    def _hooked(self) -> bool:
        """A hook anywhere but on the final norm (or the decoder itself) could change the cache: no reuse."""
        from torch.nn.modules import module as nn_module
        if nn_module._global_forward_hooks or nn_module._global_forward_pre_hooks:
            return True
        return any((m._forward_hooks or m._forward_pre_hooks) for m in self.decoder.modules()
                   if m is not self.norm and m is not self.decoder)

    def _key(self, kwargs: Dict[str, Any]) -> Any:
        weights = tuple(p._version for p in self.decoder.parameters())  # an in-place change bumps a version
        return (tuple(_tensor_key(kwargs.get(name)) for name in KEY_KWARGS), weights, torch.is_grad_enabled(),
                torch.is_autocast_enabled())

    @staticmethod
    def _plain_cache(cache: Any) -> bool:
        """transformers' DynamicCache of full-attention layers, or of sliding-window ones that have dropped nothing
        yet (the prompt is shorter than the window): a copy of its tensors is all its state."""
        from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

        def plain(layer):
            if type(layer) is DynamicLayer:
                return True
            return (type(layer) is DynamicSlidingWindowLayer and not layer.record_past
                    and (not layer.is_initialized or layer.cumulative_length == layer.keys.shape[-2]))
        return (type(cache) is DynamicCache and not getattr(cache, "offloading", False)
                and all(plain(layer) for layer in cache.layers))

    def _eligible(self, args: tuple, kwargs: Dict[str, Any]) -> bool:
        cache = kwargs.get("past_key_values")
        # a decoding step (a cache that is not empty) is turned away by the first test, cheaply
        return (cache is not None and hasattr(cache, "get_seq_length") and cache.get_seq_length() == 0
                and not args and set(kwargs) <= PLAIN_KWARGS and kwargs.get("inputs_embeds") is None
                and isinstance(kwargs.get("input_ids"), torch.Tensor) and self._plain_cache(cache)
                and not self._hooked())

    # ---------------------------------------------------------------------------------------------------- forward
    def _forward(self, original, *args, **kwargs):
        if not self._eligible(args, kwargs):
            return original(*args, **kwargs)
        cache = kwargs["past_key_values"]
        key = self._key(kwargs)
        kept = self.kept.get(key)
        if kept is not None:
            return self._replay(kept, cache)
        seen: List[torch.Tensor] = []
        handle = self.norm.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0].detach().clone()))
        try:
            out = original(*args, **kwargs)
        finally:
            handle.remove()
        if (len(seen) == 1 and set(out.keys()) == {"last_hidden_state", "past_key_values"}
                and out.past_key_values is cache and self._plain_cache(cache)):
            layers = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
            size = sum(t.numel() * t.element_size() for pair in layers for t in pair)
            size += seen[0].numel() * seen[0].element_size()
            if self.kept_bytes + size <= self.max_bytes:
                self.kept[key] = (seen[0], layers)
                self.kept_bytes += size
        return out

    def _replay(self, kept: Kept, cache: Any):
        from transformers.modeling_outputs import BaseModelOutputWithPast
        norm_input, layers = kept
        for index, (keys, values) in enumerate(layers):
            cache.update(keys, values, index)  # concatenated onto an empty layer: a copy
        self.hits += 1
        return BaseModelOutputWithPast(last_hidden_state=self.norm(norm_input.clone()), past_key_values=cache)

    # ---------------------------------------------------------------------------------------------------- with
    @property
    def active(self) -> bool:
        return self.decoder is not None and self.max_bytes > 0

    def __enter__(self) -> "PrefillReuse":
        if not self.active:
            return self
        self._saved = self.decoder.__dict__.get("forward")  # an instance forward (accelerate's) is kept and called
        original = self.decoder.forward

        def forward(*args, **kwargs):
            return self._forward(original, *args, **kwargs)

        self.decoder.forward = forward
        return self

    def __exit__(self, *exc) -> None:
        if not self.active:
            return
        if self._saved is None:
            del self.decoder.forward
        else:
            self.decoder.forward = self._saved
        self.kept, self.kept_bytes = {}, 0
