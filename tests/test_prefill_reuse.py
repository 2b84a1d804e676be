"""A sweep's prefill reuse (utils/prefill.py): decodes inside PrefillReuse are token-identical to decodes without it on
tiny Llama, Mistral and Gemma configs, with and without an edit on the final norm; the kept prefill is really used;
and it steps aside where a kept prefill would be wrong (another module hooked, weights changed in place, no room)."""
import pytest
import torch

from conftest import QUESTIONS, build_model
from utils.engines import Edit, HFEngine
from utils.intervention import Gate, new_tally
from utils.prefill import PrefillReuse
from utils.value_model import ValueModel

PROMPTS = [f"User: {q}\nAssistant:" for q in QUESTIONS[:4]]


def edits(model):
    torch.manual_seed(1)
    value_model = ValueModel(model.config.hidden_size, 16, 2)
    return [None, Edit(value_model, 2.0, 3), Edit(value_model, 5.0, 1), None,
            Edit(value_model, 2.0, 3, gate=Gate("entropy", 1.0), tally=new_tally())]


def decode_all(engine, settings):
    out = []
    for edit in settings:
        with engine.editing(edit):
            out.append(engine.decode(PROMPTS, max_new_tokens=8))
    return out


@pytest.mark.parametrize("arch", ["llama", "mistral", "gemma"])
def test_decodes_with_the_prefill_reused_equal_decodes_without(arch, tiny_tokenizer):
    model = build_model(arch, tiny_tokenizer)
    engine = HFEngine(model, tiny_tokenizer, add_special_tokens=True)
    settings = edits(model)
    alone = decode_all(engine, settings)
    assert alone[1] != alone[0]  # the edit changes the answers: a replay that lost it would show
    with engine.reusing_prefill(1 << 30) as reuse:
        reused = decode_all(engine, settings)
        assert reuse.hits == len(settings) - 1 and reuse.kept_bytes > 0  # one prefill, then only replays
    assert reused == alone
    assert "forward" not in model.get_decoder().__dict__  # the decoder is as it was
    assert decode_all(engine, settings[:2]) == alone[:2]


def test_a_hook_inside_the_decoder_turns_reuse_off(tiny_tokenizer):
    model = build_model("llama", tiny_tokenizer)
    engine = HFEngine(model, tiny_tokenizer, add_special_tokens=True)
    plain = engine.decode(PROMPTS, max_new_tokens=8)
    with engine.reusing_prefill(1 << 30) as reuse:
        assert engine.decode(PROMPTS, max_new_tokens=8) == plain
        handle = model.model.layers[0].register_forward_hook(lambda _m, _i, out: (out[0] * 3.0, *out[1:])
                                                             if isinstance(out, tuple) else out * 3.0)
        hooked = engine.decode(PROMPTS, max_new_tokens=8)
        handle.remove()
        assert reuse.hits == 0
    handle = model.model.layers[0].register_forward_hook(lambda _m, _i, out: (out[0] * 3.0, *out[1:])
                                                         if isinstance(out, tuple) else out * 3.0)
    assert engine.decode(PROMPTS, max_new_tokens=8) == hooked != plain
    handle.remove()


def test_weights_changed_in_place_or_no_room_mean_no_reuse(tiny_tokenizer):
    model = build_model("llama", tiny_tokenizer)
    engine = HFEngine(model, tiny_tokenizer, add_special_tokens=True)
    with engine.reusing_prefill(1) as reuse:  # one byte: nothing fits
        engine.decode(PROMPTS, max_new_tokens=8)
        engine.decode(PROMPTS, max_new_tokens=8)
        assert reuse.hits == 0 and reuse.kept_bytes == 0
    with PrefillReuse(model, 1 << 30) as reuse:
        before = engine.decode(PROMPTS, max_new_tokens=8)
        with torch.no_grad():
            model.model.layers[1].mlp.down_proj.weight.mul_(-4.0)
        after = engine.decode(PROMPTS, max_new_tokens=8)
        assert reuse.hits == 0
    assert engine.decode(PROMPTS, max_new_tokens=8) == after != before


def test_a_sliding_window_shorter_than_the_prompt_turns_reuse_off(tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    from conftest import tiny_config
    config = tiny_config("mistral", tiny_tokenizer)
    config.sliding_window = 4  # the cache keeps 3 of the prompt's tokens: a copy of it is not the prefill's state
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.generation_config.pad_token_id = tiny_tokenizer.pad_token_id
    engine = HFEngine(model, tiny_tokenizer, add_special_tokens=True)
    plain = engine.decode(PROMPTS, max_new_tokens=8)
    with engine.reusing_prefill(1 << 30) as reuse:
        assert engine.decode(PROMPTS, max_new_tokens=8) == plain
        assert engine.decode(PROMPTS, max_new_tokens=8) == plain
        assert reuse.hits == 0
