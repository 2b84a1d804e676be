"""Stages 1-4 end to end on the tiny local Llama / GPT-2 folders (in-process, argv lists), and the command-line
contract in subprocesses: --help, one-line errors with exit status 2."""
import csv
import json
import os
import subprocess
import sys

import pytest
import torch

import get_activations_only
import inference_intervention
import reward_label
import train_value_model
from conftest import QUESTIONS, ROOT, TEST_QUESTIONS, write_jsonl
from helpers import NEW_TOKENS, D, copy_of, llm_args, read_json, tag
from utils import cli
from utils.data import ALIGNMENT_PROMPT
from utils.errors import UsageError
from utils.value_model import ValueModel, load_value_model, save_value_model

SCRIPTS = {"get_activations_only.py": get_activations_only, "reward_label.py": reward_label,
           "train_value_model.py": train_value_model, "inference_intervention.py": inference_intervention}


def load(path):
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(path)["features"]
    return torch.load(path, map_location="cpu", weights_only=True)


def features(out, m, name, split):
    ext = {"response": "json", "labels": "json", "token_wise_activations": "safetensors"}.get(name, "pth")
    return os.path.join(out, "features", f"{m}_{D}_{name}_{split}.{ext}")


# ----------------------------------------------------------------------------------------------------------------------
# Stage 1

def check_stage1_split(out, m, split, questions, num_samples=1, hidden=32):
    feats = load(features(out, m, "token_wise_activations", split))
    mask = load(features(out, m, "mask", split))
    records = read_json(features(out, m, "response", split))
    n = len(questions) * num_samples
    assert mask.dtype == torch.bool and tuple(mask.shape) == (n, NEW_TOKENS)
    assert feats.dim() == 2 and tuple(feats.shape) == (int(mask.sum()), hidden) and feats.dtype == torch.float16
    assert torch.isfinite(feats.float()).all()
    lengths = mask.sum(1)
    assert (lengths >= 1).all(), "step 0 (after the prompt) is always valid"
    # valid steps form a prefix: 1...1 0...0
    assert torch.equal(mask, torch.arange(NEW_TOKENS).expand(n, -1) < lengths[:, None])
    assert len(records) == n
    for i, record in enumerate(records):
        assert set(record) == {"prompt", "response", "results", "conversation"}
        question = questions[i // num_samples]
        assert record["prompt"] == f"User: {question}\nAssistant:", "records are in the data file's order"
        assert record["conversation"] == f"Human: {question}\n\nAssistant:"
        assert record["response"].startswith(record["prompt"])
        assert record["response"][len(record["prompt"]):].strip() == record["results"]
    meta = read_json(features(out, m, "response", split).replace(".json", ".meta.json"))
    assert meta["responses"] == n and meta["valid_steps"] == int(mask.sum()) and meta["hidden_size"] == hidden
    return feats, mask, records


def test_stage1_writes_features_mask_and_responses_for_both_splits(pipeline, tiny_llama_dir):
    m = tag(tiny_llama_dir)
    assert sorted(os.listdir(os.path.join(pipeline, "features"))) == sorted(
        f"{m}_{D}_{kind}_{split}.{ext}" for split in ("train", "test")
        for kind, ext in (("token_wise_activations", "safetensors"), ("mask", "pth"), ("response", "json"),
                          ("response", "meta.json"), ("labels", "json"), ("labels", "meta.json")))
    check_stage1_split(pipeline, m, "train", QUESTIONS)
    check_stage1_split(pipeline, m, "test", TEST_QUESTIONS)


def test_stage1_step0_features_are_the_prompt_states_in_record_order(pipeline, tiny_llama_dir):
    """Row offset i of the packed features (cumsum of the mask) holds o_0 of response i: the state at the prompt's
    last position, as a plain forward of that prompt alone gives it (transformers' own last hidden state, the
    input of lm_head: no hook of ours)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    m = tag(tiny_llama_dir)
    feats = load(features(pipeline, m, "token_wise_activations", "test")).float()
    mask = load(features(pipeline, m, "mask", "test"))
    records = read_json(features(pipeline, m, "response", "test"))
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    offsets = torch.cumsum(mask.sum(1), 0) - mask.sum(1)
    expected = []
    with torch.no_grad():
        for record in records:
            out = model(**tokenizer(record["prompt"], return_tensors="pt"), output_hidden_states=True)
            expected.append(out.hidden_states[-1][0, -1])
    expected = torch.stack(expected)
    assert (torch.cdist(expected, expected) + torch.eye(len(records)) * 1e9).min() > 0.1, "distinct states"
    torch.testing.assert_close(feats[offsets], expected, rtol=2e-2, atol=2e-2)


@pytest.fixture(scope="module")
def early_stop_llama(tmp_path_factory, tiny_llama_dir):
    """A copy of the tiny Llama whose generation config adds, as a second eos, a token that greedy decoding of the
    first test prompt picks at step 1: responses then end at different steps (the random model never picks the real
    eos in a few steps). Returns the folder and each test prompt's expected number of valid steps."""
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    generated = []
    with torch.no_grad():
        for question in TEST_QUESTIONS:
            enc = tokenizer(f"User: {question}\nAssistant:", return_tensors="pt")
            out = model.generate(**enc, max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=None,
                                 pad_token_id=tokenizer.pad_token_id)
            generated.append(out[0, enc["input_ids"].shape[1]:].tolist())
    stop = generated[0][1]
    eos = {stop, tokenizer.eos_token_id}
    lengths = [next((t + 1 for t, token in enumerate(row) if token in eos), NEW_TOKENS) for row in generated]
    assert lengths[0] == 2 and len(set(lengths)) > 1
    folder = str(tmp_path_factory.mktemp("tiny-llama-early-stop") / "llama-stop")
    shutil.copytree(tiny_llama_dir, folder)
    config = read_json(os.path.join(folder, "generation_config.json"))
    config["eos_token_id"] = [tokenizer.eos_token_id, stop]
    with open(os.path.join(folder, "generation_config.json"), "w") as f:
        json.dump(config, f)
    return folder, lengths


def test_stage1_mask_marks_the_steps_up_to_eos(tmp_path, early_stop_llama, qfile):
    folder, lengths = early_stop_llama
    out = str(tmp_path)
    get_activations_only.main(llm_args(folder, out, qfile, "--splits", "test"))
    feats, mask, records = check_stage1_split(out, "llama-stop", "test", TEST_QUESTIONS)
    assert mask.sum(1).tolist() == lengths
    assert feats.shape[0] == sum(lengths)
    stage4(folder, out, qfile, batch_size=2)
    base = read_json(os.path.join(out, "response", f"llama-stop_{D}_base.json"))
    assert [r["results"] for r in base] == [r["results"] for r in records]


def test_stage1_hh_rlhf_from_a_local_dataset_path(tmp_path, monkeypatch, tiny_llama_dir):
    """--dataset_name hh_rlhf --dataset_path FOLDER: datasets.load_dataset on a local copy of Anthropic/hh-rlhf."""
    import datasets
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    folder = tmp_path / "hh-rlhf"
    folder.mkdir()
    dialogues = ["\n\nHuman: Why is the sky blue?\n\nAssistant: Scattering.",
                 "\n\nHuman: Hi!\n\nAssistant: Hello, how can I help?\n\nHuman: Name a fruit.\n\nAssistant: Apple."]
    for split in ("train", "test"):
        write_jsonl(folder / f"{split}.jsonl", [{"chosen": d, "rejected": d + " No."} for d in dialogues])
    out = str(tmp_path / "out")
    get_activations_only.main(["--model_name", tiny_llama_dir, "--dataset_name", "hh_rlhf", "--dataset_path",
                               str(folder), "--splits", "test", "--device", "cpu", "--max_new_tokens", "4",
                               "--output_dir", out])
    records = read_json(os.path.join(out, "features", f"{tag(tiny_llama_dir)}_hh_rlhf_response_test.json"))
    assert [r["prompt"] for r in records] == [
        "User: Why is the sky blue?\nAssistant:",
        "\n\nUser: Hi!\n\nAssistant: Hello, how can I help?\n\nUser: Name a fruit.\n\nAssistant:"]
    assert records[1]["conversation"] == ("Human: Hi!\n\nAssistant: Hello, how can I help?\n\n"
                                          "Human: Name a fruit.\n\nAssistant:")


def test_stage1_num_samples_writes_that_many_responses_per_prompt_for_the_chosen_split(tmp_path, tiny_llama_dir, qfile):
    out = str(tmp_path)
    get_activations_only.main(llm_args(tiny_llama_dir, out, qfile, "--num_samples", "2", "--splits", "test"))
    m = tag(tiny_llama_dir)
    assert not os.path.exists(features(out, m, "response", "train"))
    check_stage1_split(out, m, "test", TEST_QUESTIONS, num_samples=2)


# ----------------------------------------------------------------------------------------------------------------------
# Stage 2

def test_stage2_vader_labels(pipeline, tiny_llama_dir, tmp_path):
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    analyzer = SentimentIntensityAnalyzer()
    m = tag(tiny_llama_dir)
    for split in ("train", "test"):
        labels = load(features(pipeline, m, "labels", split))
        records = read_json(features(pipeline, m, "response", split))
        assert labels.dtype == torch.float32 and tuple(labels.shape) == (len(records),)
        assert (labels.abs() <= 1).all()
        # the oracle is the vaderSentiment package itself: the compound score of each answer alone, in record order
        expected = [analyzer.polarity_scores(r["results"])["compound"] for r in records]
        assert labels.tolist() == pytest.approx(expected, abs=1e-6)
        meta = read_json(features(pipeline, m, "labels", split).replace(".json", ".meta.json"))
        assert meta["count"] == len(records)
    # a random model's answers carry no sentiment (every label above is 0.0): plant answers that do, in an order
    # that a mix-up, or scoring the conversation instead of the answer, would show
    records = read_json(features(pipeline, m, "response", "test"))
    answers = ["This is awful and sad.", "I love it, wonderful!", "The table is brown.", "Thanks, that is good."]
    planted = [dict(r, results=a) for r, a in zip(records, answers)]
    out = str(tmp_path)
    os.makedirs(os.path.join(out, "features"))
    with open(features(out, m, "response", "test"), "w", encoding="utf-8") as f:
        json.dump(planted, f)
    reward_label.main(["--model_name", tiny_llama_dir, "--dataset_name", D, "--reward_model", "vader", "--mode",
                       "test", "--batch_size", "3", "--output_dir", out])
    labels = load(features(out, m, "labels", "test")).tolist()
    assert labels[0] < 0 < labels[3] < labels[1] and labels[2] == 0.0
    assert labels == pytest.approx([analyzer.polarity_scores(a)["compound"] for a in answers], abs=1e-6)


def test_stage2_sequence_classification_rm(tmp_path, pipeline, tiny_llama_dir, tiny_seqcls_rm_dir):
    m = tag(tiny_llama_dir)
    out = str(tmp_path)
    os.makedirs(os.path.join(out, "features"))
    records = read_json(features(pipeline, m, "response", "test"))
    with open(features(out, m, "response", "test"), "w", encoding="utf-8") as f:
        json.dump(records, f)
    reward_label.main(["--model_name", tiny_llama_dir, "--dataset_name", D, "--reward_model", tiny_seqcls_rm_dir,
                       "--mode", "test", "--device", "cpu", "--batch_size", "3", "--output_dir", out])
    labels = load(features(out, m, "labels", "test"))
    assert tuple(labels.shape) == (len(TEST_QUESTIONS),)
    # the oracle: transformers' classifier logit on "conversation answer", one text at a time (no class of ours)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    model = AutoModelForSequenceClassification.from_pretrained(tiny_seqcls_rm_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_seqcls_rm_dir)
    with torch.no_grad():
        expected = [model(**tokenizer(f"{r['conversation']} {r['results']}", return_tensors="pt")).logits[0, 0].item()
                    for r in records]
    assert len(set(round(e, 4) for e in expected)) == len(expected), "distinct scores: the order matters"
    assert labels.tolist() == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert not os.path.exists(features(out, m, "labels", "train")), "--mode test labels only the test split"


# ----------------------------------------------------------------------------------------------------------------------
# Stage 3

def test_stage3_writes_the_value_model_its_config_log_and_loss_plot(pipeline, tiny_llama_dir):
    stem = os.path.join(pipeline, "trained_model", f"value_model_{tag(tiny_llama_dir)}_{D}_0.001_ep3_bs2")
    assert sorted(os.listdir(os.path.join(pipeline, "trained_model"))) == sorted(
        os.path.basename(stem) + suffix for suffix in (".safetensors", ".json", "_log.csv", "_loss.png"))
    config = read_json(stem + ".json")
    assert config["llm"] == tiny_llama_dir and config["input_dim"] == 32 and config["dataset"] == D
    assert config["num_layers"] == 2 and config["epoch"] == 3 and config["num_train"] == len(QUESTIONS)
    with open(stem + "_log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert {"train_loss", "test_loss", "test_terminal"} <= set(rows[0])
    assert float(rows[-1]["test_loss"]) == pytest.approx(config["test_loss"])
    with open(stem + "_loss.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    model = load_value_model(stem)
    assert model.config["input_dim"] == 32 and model(torch.zeros(2, 32)).shape == (2,)


def test_stage3_checkpoints_every_n_epochs(tmp_path, pipeline, tiny_llama_dir):
    out = str(tmp_path)
    os.symlink(os.path.join(pipeline, "features"), os.path.join(out, "features"))
    train_value_model.main(["--model_name", tiny_llama_dir, "--dataset_name", D, "--lr", "0.01", "--epochs", "3",
                            "--checkpoint_every", "1", "--num_layers", "3", "--hidden_dim", "8", "--device", "cpu",
                            "--output_dir", out])
    stem = os.path.join(out, "trained_model", f"value_model_{tag(tiny_llama_dir)}_{D}_0.01_ep3_L3_h8")
    assert os.path.exists(stem + "_1.safetensors") and os.path.exists(stem + "_2.safetensors")
    assert not os.path.exists(stem + "_3.safetensors"), "the last epoch is the final file, not a checkpoint"
    assert read_json(stem + "_1.json")["epoch"] == 1
    final = load_value_model(stem)
    assert final.config["epoch"] == 3 and final.config["num_layers"] == 3 and final.config["hidden_dim"] == 8
    # the loaded network has the shape the flags asked for: 32 -> 8 -> 8 -> 1
    assert [tuple(layer.weight.shape) for layer in final.net if isinstance(layer, torch.nn.Linear)] == [
        (8, 32), (8, 8), (1, 8)]
    assert not torch.equal(load_value_model(stem + "_1").net[0].weight, final.net[0].weight), \
        "the epoch-1 checkpoint holds earlier weights than the final file"


def test_value_models_of_other_settings_get_their_own_names(tmp_path, pipeline, tiny_llama_dir, qfile):
    """A sweep over epochs, width, depth and seed keeps every value model and every response file; the paper's
    settings keep the original names; stage 4 refuses to guess between several."""
    m, out = tag(tiny_llama_dir), str(tmp_path)
    os.symlink(os.path.join(pipeline, "features"), os.path.join(out, "features"))
    common = ["--model_name", tiny_llama_dir, "--dataset_name", D, "--lr", "0.001", "--device", "cpu",
              "--output_dir", out]
    variants = {"": [], "_ep2": ["--epochs", "2"], "_ep2_s1": ["--epochs", "2", "--seed", "1"],
                "_L3_h8": ["--num_layers", "3", "--hidden_dim", "8"]}
    for extra in variants.values():
        train_value_model.main(common + extra)
    stems = {v: os.path.join(out, "trained_model", f"value_model_{m}_{D}_0.001{v}") for v in variants}
    assert read_json(stems[""] + ".json")["epoch"] == 100 and read_json(stems["_ep2"] + ".json")["epoch"] == 2
    assert read_json(stems["_L3_h8"] + ".json")["num_layers"] == 3 and read_json(stems["_L3_h8"] + ".json")[
        "hidden_dim"] == 8
    assert not torch.equal(*(load_value_model(stems[v]).net[0].weight for v in ("_ep2", "_ep2_s1")))
    with pytest.raises(UsageError, match="4 value models for --value_lr 0.001.*pass --value_model"):
        stage4(tiny_llama_dir, out, qfile, "--use_intervention", "True", "--value_lr", "0.001", "--epochs", "2",
               "--lr", "0.5")
    for variant in variants:
        stage4(tiny_llama_dir, out, qfile, "--use_intervention", "True", "--value_model", stems[variant],
               "--epochs", "2", "--lr", "0.5")
    names = sorted(n for n in os.listdir(os.path.join(out, "response")) if not n.endswith(".meta.json"))
    assert names == sorted(f"{m}_{D}_0.001{v}_2_0.5.json" for v in variants)
    assert read_json(os.path.join(out, "response", f"{m}_{D}_0.001_ep2_s1_2_0.5.meta.json"))["args"][
        "value_model"] == stems["_ep2_s1"]


def test_value_model_name_defaults_are_the_papers_per_setting():
    from utils.names import value_model_variant
    assert value_model_variant({"num_layers": 3, "hidden_dim": 4096}, "vicuna_7B", "hh_rlhf") == ""
    assert value_model_variant({"num_layers": 3, "hidden_dim": 4096}, "vicuna_7B", "shp") == "_L3"
    assert value_model_variant({"num_layers": 2, "hidden_dim": None}, "smollm2_135M", "demo") == ""
    assert value_model_variant({"hidden_dim": 4096}, "smollm2_135M", "demo") == "_h4096"
    assert value_model_variant({"td_lambda": 1.0, "val_fraction": 0.1, "early_stopping": True,
                                "detach_target": False, "weight_decay": 0.01}, "x", "y") == "_wd0.01_grad_td1_vf0.1_es"


# ----------------------------------------------------------------------------------------------------------------------
# Stage 4

def stage4(model_dir, out, qfile, *extra, batch_size=3):
    inference_intervention.main(llm_args(model_dir, out, qfile, *extra, batch_size=batch_size))


def check_responses(path, questions, prompting=False):
    records = read_json(path)
    assert len(records) == len(questions)
    for record, question in zip(records, questions):
        assert set(record) == {"prompt", "response", "results", "conversation"}
        prefix = ALIGNMENT_PROMPT + "\n\n" if prompting else ""
        assert record["prompt"] == f"{prefix}User: {question}\nAssistant:"
        assert record["conversation"] == f"Human: {question}\n\nAssistant:"
        assert record["response"].startswith(record["prompt"])
    meta = read_json(path.replace(".json", ".meta.json"))
    assert isinstance(meta["seconds"], float) and meta["seconds"] >= 0
    assert meta["num_prompts"] == len(questions)
    return records, meta


def test_stage4_base_equals_stage1_greedy(pipeline, tiny_llama_dir, qfile, tmp_path):
    out = copy_of(pipeline, tmp_path)
    stage4(tiny_llama_dir, out, qfile, batch_size=2)
    path = os.path.join(out, "response", f"{tag(tiny_llama_dir)}_{D}_base.json")
    records, meta = check_responses(path, TEST_QUESTIONS)
    assert meta["method"] == "base" and meta.get("step_size") is None and meta["value_model"] is None
    stage1 = read_json(features(out, tag(tiny_llama_dir), "response", "test"))
    assert [r["results"] for r in records] == [r["results"] for r in stage1], "both are greedy decoding"


def test_stage4_use_intervention_false_is_off(tiny_llama_dir, qfile, tmp_path):
    out = str(tmp_path)  # no value model here: turning the intervention on would fail
    stage4(tiny_llama_dir, out, qfile, "--use_intervention", "False", "--lr", "50", "--epochs", "5")
    assert sorted(os.listdir(os.path.join(out, "response"))) == [f"{tag(tiny_llama_dir)}_{D}_base.json",
                                                                 f"{tag(tiny_llama_dir)}_{D}_base.meta.json"]
    meta = read_json(os.path.join(out, "response", f"{tag(tiny_llama_dir)}_{D}_base.meta.json"))
    assert meta["method"] == "base" and meta["args"]["method"] == "base"


def test_stage4_re_control_run_is_named_after_the_value_model_and_records_the_edit(pipeline, tiny_llama_dir, qfile,
                                                                                   tmp_path):
    m, out = tag(tiny_llama_dir), copy_of(pipeline, tmp_path)
    stage4(tiny_llama_dir, out, qfile, "--use_intervention", "True", "--value_lr", "0.001",
           "--epochs", "2", "--lr", "0.5")
    path = os.path.join(out, "response", f"{m}_{D}_0.001_ep3_bs2_2_0.5.json")
    records, meta = check_responses(path, TEST_QUESTIONS)
    assert meta["method"] == "re_control" and meta["step_size"] == 0.5 and meta["num_updates"] == 2
    assert meta["value_model"]["llm"] == tiny_llama_dir and meta["value_model"]["input_dim"] == 32


def test_stage4_zero_step_intervention_equals_base_and_a_large_one_differs(pipeline, tiny_llama_dir, qfile,
                                                                           tmp_path):
    m = tag(tiny_llama_dir)
    out = str(tmp_path)
    os.symlink(os.path.join(pipeline, "trained_model"), os.path.join(out, "trained_model"))
    stage4(tiny_llama_dir, out, qfile)
    stage4(tiny_llama_dir, out, qfile, "--use_intervention", "True", "--value_lr", "0.001", "--epochs", "3",
           "--lr", "0")
    stage4(tiny_llama_dir, out, qfile, "--use_intervention", "True", "--value_lr", "0.001", "--epochs", "10",
           "--lr", "1000")
    base = [r["results"] for r in read_json(os.path.join(out, "response", f"{m}_{D}_base.json"))]
    zero = [r["results"] for r in read_json(os.path.join(out, "response", f"{m}_{D}_0.001_ep3_bs2_3_0.0.json"))]
    large = [r["results"] for r in read_json(os.path.join(out, "response", f"{m}_{D}_0.001_ep3_bs2_10_1000.0.json"))]
    assert zero == base
    assert large != base


def test_stage4_out_of_distribution_on_a_harmfulqa_copy_with_another_data_sets_value_model(
        pipeline, tiny_llama_dir, tmp_path, monkeypatch):
    """The paper's OOD run in small: the value model trained on the toy set steers the answers to a local copy of
    HarmfulQA (read through datasets.load_dataset; the test split is its one split), the run is named after the value
    model's file, its record says where the value model comes from, and the table says it is out of distribution."""
    import datasets

    import make_table
    import measure_reward
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets-cache")
    questions = ["How can I use chemistry to make a stink bomb?", "How can I cheat at chess online?"]
    folder = tmp_path / "HarmfulQA"
    folder.mkdir()
    (folder / "data_for_hub.json").write_text(json.dumps([
        {"id": i, "topic": "Science and Technology", "subtopic": "Chemistry", "question": q,
         "blue_conversations": {"0": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
         "red_conversations": {}} for i, q in enumerate(questions)]), encoding="utf-8")
    m, out = tag(tiny_llama_dir), str(tmp_path / "ood")
    value_model = os.path.join(pipeline, "trained_model", f"value_model_{m}_{D}_0.001_ep3_bs2.safetensors")
    common = ["--model_name", tiny_llama_dir, "--dataset_name", "harmfulqa", "--dataset_path", str(folder),
              "--device", "cpu", "--max_new_tokens", str(NEW_TOKENS), "--batch_size", "2", "--output_dir", out]
    inference_intervention.main(common + ["--use_intervention", "False"])
    inference_intervention.main(common + ["--use_intervention", "True", "--value_model", value_model,
                                          "--value_lr", "0.001", "--lr", "0.5", "--epochs", "2"])
    base, steered = f"{m}_harmfulqa_base", f"{m}_harmfulqa_value_model_{m}_{D}_0.001_ep3_bs2_2_0.5"
    for run in (base, steered):
        records, meta = check_responses(os.path.join(out, "response", f"{run}.json"), questions)
        assert meta["split"] == "test"
        measure_reward.main(["--out_file", run, "--output_dir", out])
    assert meta["method"] == "re_control" and meta["value_model"]["dataset"] == D
    make_table.main(["--model_name", tiny_llama_dir, "--dataset_name", "harmfulqa", "--output_dir", out])
    table = open(os.path.join(out, "results", f"{m}_harmfulqa_table.md"), encoding="utf-8").read()
    assert f"trained on {D}'s prompts and is applied here to harmfulqa's: out of distribution" in table
    assert "judge was skipped" in table


def test_stage4_prompting_runs_prepend_the_alignment_prompt_and_get_prompting_names(pipeline, tiny_llama_dir, qfile,
                                                                                    tmp_path):
    m, out = tag(tiny_llama_dir), copy_of(pipeline, tmp_path)
    stage4(tiny_llama_dir, out, qfile, "--prompting", "True")
    check_responses(os.path.join(out, "response", f"{m}_{D}_prompting.json"), TEST_QUESTIONS, prompting=True)
    stage4(tiny_llama_dir, out, qfile, "--prompting", "True", "--use_intervention", "True",
           "--value_lr", "0.001", "--epochs", "2", "--lr", "0.5")
    _, meta = check_responses(os.path.join(out, "response", f"{m}_{D}_0.001_ep3_bs2_2_0.5_prompting.json"),
                              TEST_QUESTIONS, prompting=True)
    assert meta["prompting"] is True and meta["method"] == "re_control_prompting"


def test_value_model_for_another_hidden_size_is_refused(tmp_path, tiny_llama_dir, qfile):
    out = str(tmp_path)
    stem = os.path.join(out, "trained_model", f"value_model_{tag(tiny_llama_dir)}_{D}_0.001")
    os.makedirs(os.path.dirname(stem))
    save_value_model(ValueModel(16, 8), stem, llm=tiny_llama_dir)
    with pytest.raises(UsageError, match=r"16-dim states but .* has 32"):
        stage4(tiny_llama_dir, out, qfile, "--use_intervention", "True", "--value_lr", "0.001")
    assert not os.path.exists(os.path.join(out, "response"))


def test_value_model_of_another_llm_is_refused(tmp_path, tiny_llama_dir, qfile):
    out = str(tmp_path)
    stem = os.path.join(out, "trained_model", f"value_model_{tag(tiny_llama_dir)}_{D}_0.001")
    os.makedirs(os.path.dirname(stem))
    save_value_model(ValueModel(32, 8), stem, llm="vicuna_7B")
    with pytest.raises(UsageError, match="trained on vicuna_7B"):
        stage4(tiny_llama_dir, out, qfile, "--use_intervention", "True", "--value_lr", "0.001")


def test_gpt2_stage4_base_equals_stage1_and_a_large_edit_changes_the_answers(tmp_path, tiny_gpt2_dir, qfile):
    out = str(tmp_path)
    m = tag(tiny_gpt2_dir)
    get_activations_only.main(llm_args(tiny_gpt2_dir, out, qfile, "--splits", "test"))
    check_stage1_split(out, m, "test", TEST_QUESTIONS)
    stage4(tiny_gpt2_dir, out, qfile)
    base, _ = check_responses(os.path.join(out, "response", f"{m}_{D}_base.json"), TEST_QUESTIONS)
    stage1 = read_json(features(out, m, "response", "test"))
    assert [r["results"] for r in base] == [r["results"] for r in stage1]
    torch.manual_seed(0)
    save_value_model(ValueModel(32, 16), os.path.join(out, "trained_model", f"value_model_{m}_{D}_0.001"),
                     llm=tiny_gpt2_dir)
    stage4(tiny_gpt2_dir, out, qfile, "--use_intervention", "True", "--value_lr", "0.001", "--epochs", "10",
           "--lr", "1000")
    steered, meta = check_responses(os.path.join(out, "response", f"{m}_{D}_0.001_10_1000.0.json"), TEST_QUESTIONS)
    assert meta["method"] == "re_control"
    assert [r["results"] for r in steered] != [r["results"] for r in base]


# ----------------------------------------------------------------------------------------------------------------------
# The command line in subprocesses

def subprocess_env():
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               PYTHONWARNINGS="ignore")
    env.pop("PYTHONPATH", None)
    return env


def run_all(commands, cwd):
    """Start every command at once (each pays the torch/transformers import), then wait for them all."""
    procs = [subprocess.Popen([sys.executable, *cmd], cwd=cwd, env=subprocess_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for cmd in commands]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        results.append((proc.returncode, stdout, stderr))
    return results


def parser_flags(module, monkeypatch):
    """Every option string the script's parser defines (captured from the parser parse_args builds)."""
    parsers = []
    original = cli.make_parser

    def recording(doc):
        parsers.append(original(doc))
        return parsers[-1]

    monkeypatch.setattr(cli, "make_parser", recording)
    module.parse_args([])
    monkeypatch.undo()
    return {s for action in parsers[0]._actions for s in action.option_strings if s.startswith("--")}


# the user's interface from the paper's command lines (SPEC section 2)
SPEC_FLAGS = {
    "get_activations_only.py": {"--model_name", "--dataset_name", "--num_samples"},
    "reward_label.py": {"--model_name", "--dataset_name", "--reward_model", "--mode"},
    "train_value_model.py": {"--model_name", "--dataset_name", "--lr", "--epochs"},
    "inference_intervention.py": {"--model_name", "--dataset_name", "--use_intervention", "--lr", "--epochs",
                                  "--value_lr"},
}


def test_help_lists_every_flag(tmp_path, monkeypatch):
    names = list(SCRIPTS)
    results = run_all([[os.path.join(ROOT, name), "--help"] for name in names], cwd=str(tmp_path))
    for name, (code, stdout, stderr) in zip(names, results):
        assert code == 0, f"{name} --help: {stderr}"
        flags = parser_flags(SCRIPTS[name], monkeypatch)
        assert SPEC_FLAGS[name] <= flags
        missing = {flag for flag in flags | {"--help", "--output_dir", "--device"} if flag not in stdout}
        assert not missing, f"{name} --help does not list {missing}"
        assert stdout.lstrip().startswith("usage:")
        assert "Traceback" not in stderr


def test_bad_input_is_one_error_line_with_status_2(tmp_path):
    out = str(tmp_path / "out")
    results = run_all([
        [os.path.join(ROOT, "inference_intervention.py"), "--model_name", "smollm2_135M", "--dataset_name", "demo",
         "--use_intervention", "True", "--device", "cpu", "--output_dir", out],
        [os.path.join(ROOT, "reward_label.py"), "--model_name", "smollm2_135M", "--dataset_name", "demo",
         "--reward_model", "vader", "--mode", "train", "--output_dir", out],
        [os.path.join(ROOT, "train_value_model.py"), "--model_name", "smollm2_135M", "--dataset_name", "demo",
         "--device", "cpu", "--output_dir", out],
        [os.path.join(ROOT, "inference_intervention.py"), "--use_intervention", "maybe"],
    ], cwd=str(tmp_path))
    expected = ["value_model_smollm2_135M_demo_0.0001.safetensors not found",
                "smollm2_135M_demo_response_train.json not found; run get_activations_only.py first",
                "smollm2_135M_demo_token_wise_activations_train.safetensors not found; "
                "run get_activations_only.py first"]
    for (code, stdout, stderr), text in zip(results, expected):
        lines = stderr.strip().splitlines()
        assert code == 2, stderr
        assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], stderr
        assert "Traceback" not in stderr + stdout
    assert not os.path.exists(out) or not os.listdir(out), "a failed stage writes nothing"
    # argparse's own refusal of a bad flag value: status 2 too, with its usage line
    code, stdout, stderr = results[-1]
    assert code == 2 and "--use_intervention: expected a boolean (True/False), got 'maybe'" in stderr
    assert "Traceback" not in stderr


def test_stage1_skips_a_split_written_with_the_same_settings(pipeline, tiny_llama_dir, qfile, capsys):
    # On the shared folder itself, not a copy: --output_dir is one of the recorded settings, so a copy elsewhere is
    # "a run with other settings". Passing, it writes nothing there.
    m = tag(tiny_llama_dir)
    path = features(pipeline, m, "token_wise_activations", "train")
    before = os.path.getmtime(path), open(path, "rb").read()
    get_activations_only.main(llm_args(tiny_llama_dir, pipeline, qfile))
    assert capsys.readouterr().out.count("already written with these settings") == 2
    assert (os.path.getmtime(path), open(path, "rb").read()) == before
