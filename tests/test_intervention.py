"""Exact identities of the final-norm hooks on tiny random Llama / Mistral / Gemma / GPT-2 models."""
import pytest
import torch

from conftest import QUESTIONS, build_model
from utils.generation import generate_batch, generation_config
from utils.intervention import ActivationCapture, ValueIntervention, edit_states
from utils.models import find_final_norm
from utils.value_model import ValueModel, value_and_gradient

ARCHS = ["llama", "mistral", "gemma", "gpt2"]
PROMPTS = [f"User: {q}\nAssistant:" for q in QUESTIONS[:4]]


def value_model_for(model, seed=0, num_layers=2):
    torch.manual_seed(seed)
    d = model.get_output_embeddings().weight.shape[1]
    return ValueModel(d, 16, num_layers)


def greedy(model, tok, prompts, new_tokens=8, use_cache=True):
    config = generation_config(model, tok, new_tokens, use_cache=use_cache)
    config.eos_token_id = []  # run every step: more positions where an edit could show
    return generate_batch(model, tok, prompts, config)[1]


def sgd_reference(value_model, states, step_size, num_updates):
    """The original's edit: torch.optim.SGD on -V(o + u).sum(), u starting at 0."""
    control = torch.zeros_like(states, requires_grad=True)
    optimizer = torch.optim.SGD([control], lr=step_size)
    with torch.enable_grad():
        for _ in range(num_updates):
            optimizer.zero_grad()
            (-value_model(states + control).sum()).backward()
            optimizer.step()
    return (states + control).detach()


@pytest.fixture(scope="module", params=ARCHS)
def arch_model(request, tiny_tokenizer):
    return request.param, build_model(request.param, tiny_tokenizer)


def test_final_norm_feeds_lm_head(arch_model, tiny_tokenizer):
    """The hooked module's output is exactly lm_head's input, and the generic rule finds the same module."""
    arch, model = arch_model
    norm = find_final_norm(model)
    assert find_final_norm(model, known_paths=()) is norm
    seen = {}
    h1 = norm.register_forward_hook(lambda _m, _i, o: seen.__setitem__("norm", o))
    h2 = model.get_output_embeddings().register_forward_pre_hook(lambda _m, i: seen.__setitem__("head", i[0]))
    model(**tiny_tokenizer(PROMPTS[:1], return_tensors="pt"))
    h1.remove(), h2.remove()
    assert torch.equal(seen["norm"][:, -seen["head"].shape[1]:], seen["head"])


def test_capture_matches_full_forward(arch_model, tiny_tokenizer):
    """Captured o_t equals the last-position norm output of a full, cache-free forward on prompt + tokens[:t]."""
    arch, model = arch_model
    enc = tiny_tokenizer(PROMPTS[:1], return_tensors="pt")
    with ActivationCapture(model) as capture:
        tokens = greedy(model, tiny_tokenizer, PROMPTS[:1], new_tokens=5)
        states = capture.pop()
    assert states.shape == (1, tokens.shape[1], model.get_output_embeddings().weight.shape[1])
    for t in range(tokens.shape[1]):
        ids = torch.cat([enc["input_ids"], tokens[:, :t]], dim=1)
        with torch.no_grad():  # the oracle is transformers' own last hidden state (lm_head's input), not our hook
            expected = model(input_ids=ids, use_cache=False, output_hidden_states=True).hidden_states[-1][:, -1]
        torch.testing.assert_close(states[:, t], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("step_size,num_updates", [(0.0, 5), (2.0, 0)])
def test_zero_steps_equal_base(arch_model, tiny_tokenizer, step_size, num_updates):
    arch, model = arch_model
    base = greedy(model, tiny_tokenizer, PROMPTS)
    with ValueIntervention(model, value_model_for(model), step_size, num_updates):
        steered = greedy(model, tiny_tokenizer, PROMPTS)
    assert torch.equal(steered, base)


def test_intervention_changes_tokens(arch_model, tiny_tokenizer):
    """The identities below would be empty if the edit never changed a token."""
    arch, model = arch_model
    base = greedy(model, tiny_tokenizer, PROMPTS)
    with ValueIntervention(model, value_model_for(model), 5.0, 10):
        steered = greedy(model, tiny_tokenizer, PROMPTS)
    assert not torch.equal(steered, base)


def test_cache_on_equals_cache_off(arch_model, tiny_tokenizer):
    arch, model = arch_model
    with ValueIntervention(model, value_model_for(model), 5.0, 10):
        cached = greedy(model, tiny_tokenizer, PROMPTS, use_cache=True)
        uncached = greedy(model, tiny_tokenizer, PROMPTS, use_cache=False)
    assert torch.equal(cached, uncached)


def test_alone_equals_in_padded_batch(arch_model, tiny_tokenizer):
    arch, model = arch_model
    lengths = [len(tiny_tokenizer(p)["input_ids"]) for p in PROMPTS]
    assert len(set(lengths)) > 1, "the batch must need left padding"
    with ValueIntervention(model, value_model_for(model), 5.0, 10):
        batch = greedy(model, tiny_tokenizer, PROMPTS)
        for i, prompt in enumerate(PROMPTS):
            assert torch.equal(greedy(model, tiny_tokenizer, [prompt])[0], batch[i])


def test_hooked_logits_equal_lm_head_of_hand_edited_state(arch_model, tiny_tokenizer):
    arch, model = arch_model
    value_model = value_model_for(model, num_layers=3)
    enc = tiny_tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad(), ActivationCapture(model) as capture:
        model(**enc)
        states = capture.pop()[:, 0]
    edited = sgd_reference(value_model, states, 0.5, 7)
    with torch.no_grad(), ValueIntervention(model, value_model, 0.5, 7):
        logits = model(**enc).logits[:, -1]
        expected = model.get_output_embeddings()(edited)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


def test_removing_the_hook_restores_the_model(arch_model, tiny_tokenizer):
    arch, model = arch_model
    enc = tiny_tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        before = model(**enc).logits
        hook = ValueIntervention(model, value_model_for(model), 5.0, 10).register()
        during = model(**enc).logits
        hook.remove()
        after = model(**enc).logits
    assert not torch.equal(during[:, -1], before[:, -1])
    assert torch.equal(during[:, :-1], before[:, :-1]), "only the last position is edited"
    assert torch.equal(after, before)
    assert not find_final_norm(model)._forward_hooks


def test_value_rises_over_the_updates(arch_model, tiny_tokenizer):
    arch, model = arch_model
    hook = ValueIntervention(model, value_model_for(model, num_layers=3), 0.05, 20, track_values=True).register()
    greedy(model, tiny_tokenizer, PROMPTS, new_tokens=3)
    hook.remove()
    assert len(hook.value_trace) == 3
    for trace in hook.value_trace:  # [updates + 1, batch]
        assert (trace[1:] >= trace[:-1] - 1e-6).all()
        assert (trace[-1] > trace[0]).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("num_layers", [2, 3])
@pytest.mark.parametrize("step_size,num_updates", [(0.3, 15), (0.5, 30)])
def test_closed_form_edit_equals_sgd(dtype, num_layers, step_size, num_updates):
    """The factored edit (steps in the first layer's pre-activation space) equals torch.optim.SGD on -V."""
    torch.manual_seed(0)
    value_model = ValueModel(24, 32, num_layers).to(dtype)
    states = torch.randn(5, 24, dtype=dtype)
    weights = value_model.linear_weights(dtype)
    values, grad = value_and_gradient(weights, states)
    x = states.clone().requires_grad_(True)
    value_model(x).sum().backward()
    torch.testing.assert_close(grad, x.grad)
    torch.testing.assert_close(values, value_model(states).detach())
    torch.testing.assert_close(edit_states(weights, states, step_size, num_updates),
                               sgd_reference(value_model, states, step_size, num_updates))


def test_half_precision_edit_runs_in_float32():
    """A bf16 model still gets a float32 edit: many small steps do not round away."""
    torch.manual_seed(0)
    value_model = ValueModel(16, 16, 2)
    states = torch.randn(3, 16).to(torch.bfloat16)
    edited = edit_states(value_model.linear_weights(torch.float32), states, 1e-3, 50)
    assert edited.dtype == torch.bfloat16
    expected = sgd_reference(value_model, states.float(), 1e-3, 50).to(torch.bfloat16)
    assert torch.equal(edited, expected)
    assert not torch.equal(edited, states)


# ----------------------------------------------------------------------------------------------------------------------
# The hooks as context managers, and a value model that changes

def last_logits(model, enc):
    with torch.no_grad():
        return model(**enc).logits[:, -1]


def test_a_hook_acts_only_inside_with_nested_and_reentered(tiny_tokenizer):
    model = build_model("llama", tiny_tokenizer)
    enc = tiny_tokenizer(PROMPTS, return_tensors="pt", padding=True)
    base = last_logits(model, enc)
    hook = ValueIntervention(model, value_model_for(model), 5.0, 10)
    assert torch.equal(last_logits(model, enc), base), "constructing a hook registers nothing"
    with hook:
        edited = last_logits(model, enc)
        with hook:
            assert torch.equal(last_logits(model, enc), edited), "nested: one edit, not two"
        assert torch.equal(last_logits(model, enc), edited), "the outer with still holds it"
    assert not torch.equal(edited, base)
    assert torch.equal(last_logits(model, enc), base) and not find_final_norm(model)._forward_hooks
    with hook:
        assert torch.equal(last_logits(model, enc), edited), "re-entered"
    assert torch.equal(last_logits(model, enc), base)
    with ActivationCapture(model) as capture, hook:
        last_logits(model, enc)
    assert len(capture.states) == 1 and not find_final_norm(model)._forward_hooks


def test_the_edit_reads_the_value_model_again_when_it_changes(tiny_tokenizer):
    model = build_model("llama", tiny_tokenizer)
    enc = tiny_tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        states = model(**enc, output_hidden_states=True).hidden_states[-1][:, -1]

    def by_hand(value_model):
        """The oracle: lm_head of the states edited by torch.optim.SGD on the value model as it is now."""
        with torch.no_grad():
            return model.get_output_embeddings()(sgd_reference(value_model, states, 5.0, 10))

    def close(a, b):  # logits of about 15: the factored edit and SGD round differently at about 1e-4 relative
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
    value_model = value_model_for(model)
    hook = ValueIntervention(model, value_model, 5.0, 10)
    with hook:
        first = last_logits(model, enc)
    close(first, by_hand(value_model))
    optimizer = torch.optim.SGD(value_model.parameters(), lr=1.0)  # an in-place update, as in training
    value_model(torch.randn(4, 32)).sum().backward()
    optimizer.step()
    with hook:
        after_step = last_logits(model, enc)
    close(after_step, by_hand(value_model))
    assert (after_step - first).abs().max() > 0.1, "stale weights would give the first logits again"
    hook.value_model = value_model_for(model, seed=3)
    with hook:
        swapped = last_logits(model, enc)
    close(swapped, by_hand(value_model_for(model, seed=3)))
    assert (swapped - after_step).abs().max() > 0.1
