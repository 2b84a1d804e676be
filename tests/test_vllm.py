"""The vLLM engine against the HF path, in float32 on a tiny random Llama: RE-Control tokens, the stage-1 capture and
a value model trained on each capture. One engine start for the module; skipped without the vLLM extra."""
import json
import os
import sys

import pytest
import torch

from conftest import build_vllm_llama
from utils.api import train_value_model
from utils.errors import UsageError
from utils.generation import eos_ids, generate_batch, generation_config
from utils.intervention import ActivationCapture, ValueIntervention
from utils.training import ValueTrainingConfig
from utils.value_model import ValueModel

PROMPTS = ["Why is the sky blue?", "hello", "How do I make a good cup of coffee at home, and what beans?",
           "thank you, great", "My dog died yesterday and I feel awful. How do I cope?", "sad happy world",
           "Can you suggest a small gift for my teacher?", "Human: hello world Assistant:"]
MAX_NEW = 24
NUM_UPDATES = 4
HIDDEN = 128  # two heads of 64: a head size vLLM's CPU attention supports
TOKEN_BUDGET = 16  # tokens per engine step: the longer prompts are prefilled in chunks (rows the capture skips)


def test_missing_extra_is_one_line(monkeypatch):
    import utils.vllm_engine as engine
    monkeypatch.setitem(sys.modules, "vllm", None)  # what importlib reports for a package that is not installed
    assert not engine.vllm_available()
    with pytest.raises(UsageError, match="^--engine vllm needs the vLLM extra: bash scripts/setup.sh --vllm$"):
        engine.VllmEngine("unused")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(HF model, tokenizer, prompt ids, engine): the same float32 weights in both engines."""
    pytest.importorskip("vllm")
    from utils.vllm_engine import VllmEngine
    folder = str(tmp_path_factory.mktemp("tiny-llama-64"))
    model, tokenizer = build_vllm_llama(folder, HIDDEN)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the tiny model needs far less than the default
    engine = VllmEngine(folder, dtype="float32", seed=0, max_model_len=256, enforce_eager=True, max_num_seqs=8,
                        max_num_batched_tokens=TOKEN_BUDGET, enable_chunked_prefill=True)
    prompt_ids = [tokenizer(p)["input_ids"] for p in PROMPTS]
    assert max(len(ids) for ids in prompt_ids) > TOKEN_BUDGET  # at least one prompt takes several steps
    yield model, tokenizer, prompt_ids, engine
    engine.close()


def value_model(seed=1):
    torch.manual_seed(seed)
    return ValueModel(HIDDEN, 32)


def hf_rows(model, tokenizer, step_size=None, capture=False, gate=None):
    """HF generate_batch (with RE-Control's hook if step_size is given): token lists, and the captured states."""
    config = generation_config(model, tokenizer, MAX_NEW)
    hooks = ValueIntervention(model, value_model(), step_size, NUM_UPDATES, gate=gate) if step_size is not None \
        else None
    grab = ActivationCapture(model, dtype=torch.float32) if capture else None
    if grab:  # before the edit's hook: the states the edit starts from
        grab.register()
    if hooks:
        hooks.register()
    try:
        _, tokens, mask = generate_batch(model, tokenizer, PROMPTS, config)
        states = grab.pop() if grab else None
    finally:
        for hook in (hooks, grab):
            if hook:
                hook.remove()
    rows = [row[m].tolist() for row, m in zip(tokens, mask)]
    return rows, mask, (states[mask] if capture else None)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 8.0])
def test_recontrol_tokens_equal_hf(setup, alpha):
    model, tokenizer, prompt_ids, engine = setup
    expected = hf_rows(model, tokenizer, step_size=alpha)[0]
    got = engine.generate(prompt_ids, MAX_NEW, value_model=value_model(), step_size=alpha, num_updates=NUM_UPDATES)
    assert got == expected
    assert len({len(r) for r in got}) > 1 and min(len(r) for r in got) < MAX_NEW  # requests end at different steps


def test_alpha_zero_is_plain_vllm_and_the_edit_acts(setup):
    _, _, prompt_ids, engine = setup
    plain = engine.generate(prompt_ids, MAX_NEW)
    assert engine.generate(prompt_ids, MAX_NEW, value_model=value_model(), step_size=0.0,
                           num_updates=NUM_UPDATES) == plain
    edited = engine.generate(prompt_ids, MAX_NEW, value_model=value_model(), step_size=8.0, num_updates=NUM_UPDATES)
    assert edited != plain
    assert engine.generate(prompt_ids, MAX_NEW) == plain  # the edit is cleared after the call


@pytest.mark.parametrize("signal, every, nothing", [("value", float("inf"), float("-inf")),
                                                     ("entropy", -1.0, float("inf"))])
def test_a_gate_that_admits_every_row_is_the_ungated_edit_and_none_is_plain(setup, signal, every, nothing):
    from utils.intervention import Gate, new_tally
    _, _, prompt_ids, engine = setup
    edit = dict(value_model=value_model(), step_size=8.0, num_updates=NUM_UPDATES)
    ungated = engine.generate(prompt_ids, MAX_NEW, **edit)
    tally = new_tally()
    assert engine.generate(prompt_ids, MAX_NEW, **edit, gate=Gate(signal, every), tally=tally) == ungated
    assert tally["edited"] == tally["rows"] > 0
    assert engine.generate(prompt_ids, MAX_NEW, **edit, gate=Gate(signal, nothing)) == engine.generate(prompt_ids,
                                                                                                       MAX_NEW)


@pytest.mark.parametrize("signal", ["value", "entropy"])
def test_a_gate_edits_the_rows_hf_edits(setup, signal):
    """A threshold inside the signal's range (some rows edited, some not): the same tokens as the HF hook."""
    from utils.intervention import Gate, new_tally
    model, tokenizer, prompt_ids, engine = setup
    for threshold in (0.0, 0.05, -0.05) if signal == "value" else (5.7, 5.6, 5.5, 5.4, 5.2, 5.0, 4.5, 4.0, 3.0):
        gate, tally = Gate(signal, threshold), new_tally()
        got = engine.generate(prompt_ids, MAX_NEW, value_model=value_model(), step_size=8.0,
                              num_updates=NUM_UPDATES, gate=gate, tally=tally)
        if 0 < tally["edited"] < tally["rows"]:
            break
    assert 0 < tally["edited"] < tally["rows"], tally
    assert got == hf_rows(model, tokenizer, step_size=8.0, gate=gate)[0]


def test_eos_ids_match_hf(setup):
    model, tokenizer, _, engine = setup
    assert engine.eos_token_ids == eos_ids(model, tokenizer)


@pytest.fixture(scope="module")
def captures(setup):
    model, tokenizer, prompt_ids, engine = setup
    return hf_rows(model, tokenizer, capture=True), engine.capture(prompt_ids, MAX_NEW)


def test_capture_equals_hf(captures):
    (rows, mask, features), got = captures
    assert got.tokens == rows
    vllm_features, lengths = got.rows()
    assert torch.equal(lengths, mask.sum(1))
    assert len(set(lengths.tolist())) > 1 and int(lengths.min()) < MAX_NEW
    assert vllm_features.shape == features.shape
    assert torch.allclose(vllm_features, features, atol=1e-4, rtol=0)


def test_capture_with_the_edit_on_equals_hf(setup):
    """Stage 3's refit rollouts: the edited policy's tokens, and the unedited states the edit starts from."""
    model, tokenizer, prompt_ids, engine = setup
    rows, mask, features = hf_rows(model, tokenizer, step_size=8.0, capture=True)
    assert rows != hf_rows(model, tokenizer)[0]  # the edit changes the responses
    with engine.edit(value_model(), 8.0, NUM_UPDATES):
        got = engine.capture(prompt_ids, MAX_NEW)
    assert got.tokens == rows
    vllm_features, lengths = got.rows()
    assert torch.equal(lengths, mask.sum(1))
    assert torch.allclose(vllm_features, features, atol=1e-4, rtol=0)


def test_value_model_trained_on_vllm_capture_equals_hf(captures):
    (_, mask, features), got = captures
    vllm_features, lengths = got.rows()
    rewards = torch.linspace(-1, 1, len(lengths)).tolist()
    config = ValueTrainingConfig(epochs=30, lr=1e-3, batch_size=4, seed=0)
    torch.manual_seed(0)
    from_hf = train_value_model(features, mask.sum(1), rewards, config)
    torch.manual_seed(0)
    from_vllm = train_value_model(vllm_features, lengths, rewards, config)
    with torch.no_grad():
        assert torch.allclose(from_vllm(features), from_hf(features), atol=1e-3)
    for a, b in zip(from_hf.parameters(), from_vllm.parameters()):
        assert torch.allclose(a, b, atol=1e-3)


def test_sampling_is_seeded_per_request(setup):
    _, _, prompt_ids, engine = setup
    kwargs = dict(do_sample=True, temperature=1.0, top_k=50, top_p=0.95, num_samples=2, seed=7)
    first = engine.generate(prompt_ids[:3], MAX_NEW, **kwargs)
    assert len(first) == 6
    assert engine.generate(prompt_ids[:3], MAX_NEW, **kwargs) == first
    assert engine.generate(prompt_ids[:3], MAX_NEW, **dict(kwargs, seed=8)) != first
    # independent of the batch, although the batch of 3 prompts is prefilled in chunks (the 16-token budget)
    assert engine.generate(prompt_ids[:1], MAX_NEW, **kwargs) == first[:2]


# ----------------------------------------------------------------------------------------------------------------------
# The stages with --engine vllm: the same files as with --engine hf (the module's engine passed in: one start)

def stage_args(parse_args, engine, out, qfile, *extra):
    return parse_args(["--model_name", engine.model_path, "--dataset_name", "toy", "--data_file", qfile,
                       "--device", "cpu", "--max_new_tokens", str(MAX_NEW), "--batch_size", "3", "--output_dir",
                       out, *extra])


@pytest.fixture(scope="module")
def qfile(tmp_path_factory):
    from conftest import write_jsonl
    folder = tmp_path_factory.mktemp("questions")
    for split in ("train", "test"):
        write_jsonl(folder / f"q_{split}.jsonl", [{"question": p} for p in PROMPTS])
    return str(folder / "q_{split}.jsonl")


def test_stage1_through_vllm_writes_the_files_hf_writes(setup, qfile, tmp_path):
    import get_activations_only
    from utils.stages.stage1_activations import run_get_activations
    model, tokenizer, _, engine = setup
    written = {}
    for engine_name, policy in (("hf", model), ("vllm", engine)):
        out = str(tmp_path / engine_name)
        args = stage_args(get_activations_only.parse_args, engine, out, qfile, "--splits", "train",
                          "--feature_dtype", "float32", "--engine", engine_name)
        run_get_activations(args, policy, tokenizer)
        written[engine_name] = out
    tag = os.path.basename(engine.model_path)
    hf, vl = (os.path.join(written[e], "features", f"{tag}_toy_") for e in ("hf", "vllm"))
    from safetensors.torch import load_file
    hf_features = load_file(hf + "token_wise_activations_train.safetensors")["features"]
    vllm_features = load_file(vl + "token_wise_activations_train.safetensors")["features"]
    assert hf_features.shape == vllm_features.shape and hf_features.shape[0] > len(PROMPTS)
    assert torch.allclose(hf_features, vllm_features, atol=1e-4, rtol=0)
    masks = [torch.load(p + "mask_train.pth", weights_only=True) for p in (hf, vl)]
    assert torch.equal(*masks) and len(set(masks[0].sum(1).tolist())) > 1  # responses end at different steps
    records = []
    for p in (hf, vl):
        with open(p + "response_train.json") as f:
            records.append(json.load(f))
    assert records[0] == records[1]


def test_stage4_re_control_through_vllm_answers_as_hf(setup, qfile, tmp_path):
    import inference_intervention
    from utils.stages.stage4_inference import run_decode
    from utils.value_model import save_value_model
    model, tokenizer, _, engine = setup
    stem = str(tmp_path / "vm")
    save_value_model(value_model(), stem, llm=engine.model_path)
    answers = {}
    for engine_name, policy in (("hf", model), ("vllm", engine)):
        out = str(tmp_path / engine_name)
        parsed = stage_args(inference_intervention.parse_args, engine, out, qfile, "--use_intervention", "True",
                            "--value_model", stem, "--lr", "0.5", "--epochs", str(NUM_UPDATES), "--engine",
                            engine_name)
        name = run_decode(parsed.config, parsed.options, policy)
        with open(os.path.join(out, "response", f"{name}.json")) as f:
            answers[engine_name] = json.load(f)
        with open(os.path.join(out, "response", f"{name}.meta.json")) as f:
            assert json.load(f)["args"]["engine"] == engine_name
    assert answers["hf"] == answers["vllm"]
    assert len({r["results"] for r in answers["vllm"]}) > 1


def test_best_of_n_through_vllm_keeps_the_highest_reward(setup, qfile, tmp_path):
    import decode_methods
    from helpers import PlantedReward, planted_score
    from utils.metrics import cut_at_next_turn
    from utils.stages.stage4_inference import run_decode
    from utils.vllm_engine import engine_decode
    _, tokenizer, _, engine = setup
    parsed = stage_args(decode_methods.parse_args, engine, str(tmp_path), qfile, "--method", "best_of_n",
                        "--num_candidates", "3", "--engine", "vllm", "--batch_size", "1", "--limit", "4")
    name = run_decode(parsed.config, parsed.options, engine, reward_model=PlantedReward(batch_size=16))
    with open(tmp_path / "response" / f"{name}.json") as f:
        chosen = json.load(f)
    picks = []
    for record in chosen:  # one prompt per batch: the engine's seeds are those of a call with this prompt alone
        _, candidates = engine_decode(engine, tokenizer, [record["prompt"]], True, MAX_NEW, 3, do_sample=True,
                                      temperature=0.7, top_k=50, top_p=0.95)
        scores = [planted_score(cut_at_next_turn(c)) for c in candidates]
        picks.append(scores.index(max(scores)))
        assert record["results"] == candidates[picks[-1]]
    assert len({r["results"] for r in chosen}) > 1


def test_engine_vllm_without_the_extra_is_one_line_and_writes_nothing(tmp_path, monkeypatch, tiny_llama_dir):
    import get_activations_only
    monkeypatch.setitem(sys.modules, "vllm", None)
    write = tmp_path / "q_{split}.jsonl"
    from conftest import write_jsonl
    write_jsonl(tmp_path / "q_train.jsonl", [{"question": p} for p in PROMPTS])
    with pytest.raises(UsageError, match="^--engine vllm needs the vLLM extra: bash scripts/setup.sh --vllm$"):
        get_activations_only.main(["--model_name", tiny_llama_dir, "--dataset_name", "toy", "--data_file", str(write),
                                   "--splits", "train", "--engine", "vllm", "--output_dir", str(tmp_path / "out")])
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("method", ["args", "cd_prefix", "static_re"])
def test_methods_that_need_hf_loop_refuse_vllm(tmp_path, method):
    import decode_methods
    with pytest.raises(UsageError, match=f"^--method {method} works inside HF's decoding loop.*--engine hf"):
        decode_methods.main(["--method", method, "--engine", "vllm", "--output_dir", str(tmp_path)])
    assert os.listdir(tmp_path) == []
