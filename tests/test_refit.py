"""Stage 3's on-policy refits (--rounds) on the tiny Llama: each round's value model names its parent, its rollouts
were generated with the parent's edit on, and the states it reads are the unedited o_t along them."""
import json
import os

import pytest
import torch

from helpers import D, copy_of
from utils.configs import ActivationsConfig
from utils.engines import Edit, HFEngine
from utils.intervention import ValueIntervention, find_final_norm
from utils.io import features_path
from utils.runs import BatchRun
from utils.stages.stage1_activations import capture_split
from utils.value_model import ValueModel, load_value_model, value_model_fingerprint

ROUND2 = "_r2_ra20_rn3"


def stage1_responses(out, stem):
    """Stage 1's training responses of the run folder (relative to it), as a value model's lineage names them."""
    m = os.path.basename(stem).removeprefix("value_model_").split(f"_{D}_")[0]
    return os.path.relpath(features_path(out, m, D, "response", "train"), out)


@pytest.fixture(scope="module")
def refit(pipeline, tmp_path_factory, tiny_llama_dir):
    """The pipeline's stages 1-2, then stage 3 with --rounds 2 (HF engine)."""
    import train_value_model
    out = copy_of(pipeline, tmp_path_factory.mktemp("refit"))
    train_value_model.main(["--model_name", tiny_llama_dir, "--dataset_name", D, "--lr", "0.001", "--epochs", "3",
                            "--batch_size", "2", "--device", "cpu", "--output_dir", out, "--overwrite", "True",
                            "--rounds", "2", "--refit_step_size", "20", "--refit_num_updates", "3",
                            "--refit_engine", "hf"])
    m = os.path.basename(tiny_llama_dir)
    return out, os.path.join(out, "trained_model", f"value_model_{m}_{D}_0.001_ep3_bs2")


def test_a_refit_round_writes_a_value_model_whose_lineage_names_its_parent(refit):
    out, first = refit
    second = first + ROUND2
    described = json.load(open(second + ".json"))
    lineage = described["lineage"]
    assert lineage["round"] == 2
    assert lineage["parent"] == os.path.relpath(first, out)
    assert lineage["parent_sha256"] == value_model_fingerprint(first)
    assert lineage["rollout_edit"] == {"step_size": 20.0, "num_updates": 3, "engine": "hf"}
    assert described["settings"]["rounds"] == 2 and described["settings"]["refit_step_size"] == 20.0
    assert json.load(open(first + ".json"))["lineage"] == {"round": 1, "parent": None,
                                                          "rollouts": stage1_responses(out, first)}
    assert lineage["rollouts"].startswith(os.path.join("refits", os.path.basename(second), "features"))
    rollouts = os.path.join(out, lineage["rollouts"])
    recorded = json.load(open(rollouts.removesuffix(".json") + ".meta.json"))["settings"]["edit"]
    assert recorded["value_model_sha256"] == value_model_fingerprint(first)
    assert (recorded["step_size"], recorded["num_updates"]) == (20.0, 3)
    assert not torch.equal(load_value_model(second).net[0].weight, load_value_model(first).net[0].weight)


def test_round_one_is_the_paper_value_model(refit, pipeline, tiny_llama_dir):
    """The first round of a chain trains what --rounds 1 trains (the pipeline's value model): the same weights."""
    _, first = refit
    plain = os.path.join(pipeline, "trained_model", os.path.basename(first))
    assert value_model_fingerprint(first) == value_model_fingerprint(plain)


def test_the_refit_rollouts_are_the_edited_policys(refit):
    out, first = refit
    lineage = json.load(open(first + ROUND2 + ".json"))["lineage"]
    edited = json.load(open(os.path.join(out, lineage["rollouts"])))
    original = json.load(open(os.path.join(out, stage1_responses(out, first))))
    assert [r["prompt"] for r in edited] == [r["prompt"] for r in original]
    assert [r["results"] for r in edited] != [r["results"] for r in original]


def test_stage1_with_the_edit_on_keeps_the_unedited_states(tiny_llama_dir, tmp_path):
    """The states stage 1 keeps while the edit is on are o_t of the tokens the edited policy chose, as an unedited
    forward pass over those tokens computes them (the edit changes only the logits; the KV cache is the model's)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    engine = HFEngine(model, tokenizer, True)
    torch.manual_seed(3)
    edit = Edit(ValueModel(model.config.hidden_size, 16), 50.0, 3)
    config = ActivationsConfig(batch_size=2, max_new_tokens=6, feature_dtype="float32")
    prompts = [{"prompt": t, "conversation": t} for t in ("hello there", "how do I bake bread at home?")]

    def stage1(with_edit):
        run, batches, _ = capture_split(config, engine, prompts, "train",
                                        lambda n: BatchRun(str(tmp_path / f"{with_edit}.json"), {}, n, False),
                                        edit if with_edit else None)
        return [prompts[j]["prompt"] for j in batches[0]], run.results()[0], run.load_tensors(0)["features"]
    texts, part, states = stage1(True)
    assert [r["results"] for r in part["records"]] != [r["results"] for r in stage1(False)[1]["records"]]
    with engine.editing(edit):  # the edited policy's tokens (greedy: the same as stage 1's)
        prompt_ids, tokens, mask, _ = engine.capture(texts, 6, None, 1, 0, 0, 2, torch.float32)
    expected, grabbed = [], []
    handle = find_final_norm(model).register_forward_hook(lambda _m, _i, out: grabbed.append(out[0]))
    try:
        for ids, row, valid in zip(prompt_ids, tokens, mask):
            generated = row[valid].tolist()
            with torch.no_grad():
                model(torch.tensor([ids + generated[:-1]]))
            expected.append(grabbed.pop()[len(ids) - 1:])
    finally:
        handle.remove()
    expected = torch.cat(expected)
    assert expected.shape == states.shape
    assert torch.allclose(states, expected, atol=1e-4, rtol=0)
    edited = ValueIntervention(model, edit.value_model, edit.step_size, edit.num_updates).edit(states)
    assert (edited - states).abs().max() > 1e-2  # what the capture did not keep
