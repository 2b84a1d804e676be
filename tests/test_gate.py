"""The gated edit (issue 20): a gate that admits every row is the ungated edit, one that admits none is the base
model, a planted value function or entropy picks exactly the rows it should, and stage 4 records the fraction."""
import json
import os

import pytest
import torch

from conftest import QUESTIONS, build_model
from helpers import llm_args, read_json
from utils.generation import generate_batch, generation_config
from utils.intervention import Gate, ValueIntervention, edit_states, gated_edit, new_tally
from utils.value_model import ValueModel

PROMPTS = [f"User: {q}\nAssistant:" for q in QUESTIONS[:4]]


def planted_value_model(d):
    """V(o) = mean of relu(o): the first layer is the identity, the last averages."""
    model = ValueModel(d, d, 2)
    with torch.no_grad():
        model.net[0].weight.copy_(torch.eye(d))
        model.net[0].bias.zero_()
        model.net[2].weight.fill_(1.0 / d)
        model.net[2].bias.zero_()
    return model


def test_a_planted_value_gate_edits_exactly_the_rows_below_tau():
    d = 8
    weights = planted_value_model(d).linear_weights(torch.float32)
    states = torch.zeros(6, d)
    states[:, 0] = torch.tensor([0.0, 8.0, 1.6, 24.0, 3.2, 40.0])  # V = 0, 1, 0.2, 3, 0.4, 5
    tally = new_tally()
    edited = gated_edit(weights, states, 0.5, 3, Gate("value", 0.5), tally=tally)
    expected_rows = torch.tensor([True, False, True, False, True, False])  # V < 0.5
    assert torch.equal(edited[~expected_rows], states[~expected_rows])  # untouched, bit for bit
    assert torch.equal(edited[expected_rows], edit_states(weights, states[expected_rows], 0.5, 3))
    assert not torch.equal(edited[expected_rows], states[expected_rows])  # the edit acts on those rows
    assert tally == {"edited": 3, "rows": 6}


def test_a_planted_entropy_gate_edits_exactly_the_uncertain_rows():
    d, vocab = 4, 5
    weights = planted_value_model(d).linear_weights(torch.float32)
    head = torch.zeros(vocab, d)
    head[0, 0] = 1.0  # logits = (o_0, 0, 0, 0, 0): large o_0 = one sure token, o_0 = 0 = uniform (log 5 nats)
    states = torch.zeros(4, d)
    states[:, 0] = torch.tensor([0.0, 20.0, 0.5, 30.0])
    states[:, 1] = 1.0  # V > 0: the edit moves every row it touches
    entropy = -(torch.log_softmax(states @ head.t(), -1).exp() * torch.log_softmax(states @ head.t(), -1)).sum(-1)
    gate = Gate("entropy", 1.0)
    rows = gate.rows(weights, states, lambda x: x @ head.t())
    assert torch.equal(rows, entropy > 1.0) and rows.tolist() == [True, False, True, False]
    edited = gated_edit(weights, states, 0.5, 3, gate, logits_of=lambda x: x @ head.t())
    assert torch.equal(edited[~rows], states[~rows]) and not torch.equal(edited[rows], states[rows])


def test_an_unknown_signal_is_refused():
    with pytest.raises(ValueError, match="gate signal must be one of entropy, value"):
        Gate("loss", 1.0)


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    return build_model("llama", tiny_tokenizer)


def greedy(model, tokenizer, hook=None):
    config = generation_config(model, tokenizer, 8)
    if hook is None:
        return generate_batch(model, tokenizer, PROMPTS, config)[1]
    with hook:
        return generate_batch(model, tokenizer, PROMPTS, config)[1]


@pytest.mark.parametrize("signal", ["value", "entropy"])
def test_a_gate_that_admits_every_row_is_the_ungated_edit_and_none_is_base(model, tiny_tokenizer, signal):
    torch.manual_seed(0)
    value_model = ValueModel(model.config.hidden_size, 16)
    ungated = greedy(model, tiny_tokenizer, ValueIntervention(model, value_model, 5.0, 10))
    assert not torch.equal(ungated, greedy(model, tiny_tokenizer))  # the edit changes tokens here
    every, nothing = (float("inf"), float("-inf")) if signal == "value" else (-1.0, float("inf"))
    tally = new_tally()
    assert torch.equal(greedy(model, tiny_tokenizer, ValueIntervention(model, value_model, 5.0, 10,
                                                                       gate=Gate(signal, every), tally=tally)),
                       ungated)
    assert tally["edited"] == tally["rows"] > 0
    assert torch.equal(greedy(model, tiny_tokenizer, ValueIntervention(model, value_model, 5.0, 10,
                                                                       gate=Gate(signal, nothing))),
                       greedy(model, tiny_tokenizer))


def test_stage4_with_a_gate_records_the_fraction_and_without_one_is_unchanged(pipeline, tiny_llama_dir, qfile,
                                                                               tmp_path):
    import inference_intervention
    from helpers import copy_of
    from utils.stages.stage4_inference import run_decode
    out = copy_of(pipeline, tmp_path)
    names = {}
    for label, extra in (("off", []), ("value", ["--gate", "value", "--gate_threshold", "0.0"])):
        parsed = inference_intervention.parse_args(llm_args(tiny_llama_dir, out, qfile, "--use_intervention", "True",
                                                            "--value_lr", "0.001", "--lr", "2.0", "--epochs", "5",
                                                            *extra))
        names[label] = run_decode(parsed.config, parsed.options)
    assert names["value"] == names["off"] + "_gate_value0"
    off = read_json(os.path.join(out, "response", f"{names['off']}.meta.json"))
    gated = read_json(os.path.join(out, "response", f"{names['value']}.meta.json"))
    assert "option_gate" not in off["settings"] and "gate_tally" not in off  # a run without a gate: as before
    assert gated["settings"]["option_gate"] == "value" and gated["settings"]["option_gate_threshold"] == 0.0
    tally = gated["gate_tally"]
    assert tally["rows"] > 0 and 0 <= tally["edited"] <= tally["rows"]
    with open(os.path.join(out, "response", f"{names['off']}.json")) as f:
        assert len(json.load(f)) == 4


def test_gate_flags_come_together(pipeline, tiny_llama_dir, qfile, tmp_path):
    import inference_intervention
    from helpers import copy_of
    from utils.errors import UsageError
    from utils.stages.stage4_inference import run_decode
    parsed = inference_intervention.parse_args(llm_args(tiny_llama_dir, copy_of(pipeline, tmp_path), qfile,
                                                        "--use_intervention", "True", "--value_lr", "0.001", "--lr",
                                                        "1", "--epochs", "1", "--gate", "value"))
    with pytest.raises(UsageError, match="pass --gate and --gate_threshold together"):
        run_decode(parsed.config, parsed.options)
