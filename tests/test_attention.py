"""utils/attention.py: grouped-query attention without copying the K/V heads is bit-identical to transformers' sdpa on
tiny Llama, Mistral and Gemma configs (4 query heads, 2 K/V heads; float32 and bfloat16), left-padded, prefill and
greedy decoding; it is really taken under a mask; what it does not cover goes to transformers' sdpa; stage loading
switches to it."""
import pytest
import torch

from conftest import QUESTIONS, build_model
from utils.attention import NAME, use_grouped_kv
from utils.generation import generate_batch, generation_config
from utils.models import load_model_and_tokenizer, resolve_model

PROMPTS = [f"User: {q}\nAssistant:" for q in QUESTIONS]  # lengths differ: left padding, so a mask


def spy_on_sdpa(monkeypatch):
    """Record enable_gqa of every torch sdpa call (the real function still runs)."""
    calls, real = [], torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(kwargs.get("enable_gqa", False))
        return real(*args, **kwargs)
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("arch", ["llama", "mistral", "gemma"])
def test_grouped_kv_is_bit_identical_to_transformers_sdpa(arch, dtype, tiny_tokenizer, monkeypatch):
    model = build_model(arch, tiny_tokenizer).to(dtype)
    assert model.config._attn_implementation == "sdpa"
    enc = tiny_tokenizer(PROMPTS, return_tensors="pt", padding=True)
    assert not enc["attention_mask"].all()
    config = generation_config(model, tiny_tokenizer, 10)
    with torch.no_grad():
        states = model(**enc, output_hidden_states=True).hidden_states
    tokens = generate_batch(model, tiny_tokenizer, PROMPTS, config)[1]

    assert use_grouped_kv(model) and model.config._attn_implementation == NAME
    calls = spy_on_sdpa(monkeypatch)
    with torch.no_grad():
        grouped_states = model(**enc, output_hidden_states=True).hidden_states
    assert calls and all(calls)  # every layer took torch's grouped path under the mask
    assert all(torch.equal(a, b) for a, b in zip(states, grouped_states))
    assert torch.equal(generate_batch(model, tiny_tokenizer, PROMPTS, config)[1], tokens)

    model.set_attn_implementation("sdpa")  # and back
    calls.clear()
    assert torch.equal(generate_batch(model, tiny_tokenizer, PROMPTS, config)[1], tokens)
    assert not any(calls)


def test_without_a_mask_or_with_gradients_it_is_transformers_sdpa(tiny_tokenizer, monkeypatch):
    model = build_model("llama", tiny_tokenizer)
    ids = tiny_tokenizer(PROMPTS[:1], return_tensors="pt")["input_ids"]
    enc = tiny_tokenizer(PROMPTS, return_tensors="pt", padding=True)
    reference = model(**enc).logits
    reference.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    use_grouped_kv(model)
    calls = spy_on_sdpa(monkeypatch)
    logits = model(**enc).logits  # gradients on: transformers' path, its repeat_kv and its backward
    logits.sum().backward()
    assert torch.equal(logits, reference) and not any(calls)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    calls.clear()
    with torch.no_grad():
        model(input_ids=ids)  # one unpadded prompt: no mask, transformers already passes the groups to torch
    assert calls and all(calls)


def test_loading_switches_grouped_models_only(tiny_llama_dir, tiny_gpt2_dir):
    llama, _ = load_model_and_tokenizer(resolve_model(tiny_llama_dir), "cpu", "float32")
    assert llama.config._attn_implementation == NAME
    gpt2, _ = load_model_and_tokenizer(resolve_model(tiny_gpt2_dir), "cpu", "float32")
    assert gpt2.config._attn_implementation != NAME and not use_grouped_kv(gpt2)
