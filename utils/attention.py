"""Grouped-query attention on CPU without copying the K/V heads.

With a padding mask (left-padded batches: every stage's decode), transformers' sdpa path repeats each K/V head for its
group of query heads (repeat_kv: a copy of the whole cache, per layer and step) before torch's sdpa. On CPU torch's sdpa
takes the groups itself (enable_gqa) under a mask: the same flash kernel on the same numbers, bit-identical hidden
states and tokens (tests/test_attention.py; on SmolLM2-135M, bench/decode_profile.py), 0.88x the time of a
50-prompt decode. Registered through transformers' AttentionInterface, so no modeling code is copied; every case it does
not cover (no mask, CUDA, gradients, extra inputs) goes to transformers' own sdpa function unchanged.
"""
import functools

import torch

NAME = "sdpa_grouped_kv"


def sdpa_grouped_kv(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, *,
                    transformers_sdpa, **kwargs):
    if (attention_mask is None or getattr(module, "num_key_value_groups", 1) <= 1 or query.device.type != "cpu"
            or torch.is_grad_enabled() or kwargs.get("position_bias") is not None or kwargs.get("cache") is not None
            or kwargs.get("output_attentions", False)):
        return transformers_sdpa(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                 is_causal=is_causal, **kwargs)
    # a mask is present, so transformers' is_causal is False as well
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                           dropout_p=dropout, scale=scaling, is_causal=False,
                                                           enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


def use_grouped_kv(model):
    """Switch a CPU model that runs transformers' sdpa with grouped-query attention to sdpa_grouped_kv (the same mask
    function as sdpa). Returns whether it switched; other models are left as they are."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    grouped = any(getattr(m, "num_key_value_groups", 1) > 1 for m in model.modules())
    settable = getattr(model, "_can_set_attn_implementation", lambda: False)()  # models on AttentionInterface
    if (model.device.type != "cpu" or getattr(model.config, "_attn_implementation", None) != "sdpa" or not grouped
            or not settable):
        return False
    # transformers' own function bound once: nothing is imported per layer and step
    AttentionInterface.register(NAME, functools.partial(sdpa_grouped_kv, transformers_sdpa=sdpa_attention_forward))
    AttentionMaskInterface.register(NAME, sdpa_mask)  # without it the model would build no sdpa-style mask
    model.set_attn_implementation(NAME)
    return model.config._attn_implementation == NAME
