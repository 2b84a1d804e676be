"""Stages 5-6 as scripts: measure_reward.py on VADER and the tiny reward models, metrics.py on a hand-made run."""
import json
import os

import pytest

import measure_reward
import metrics
from utils.cli import UsageError
from utils.metrics import diversity, rep_n
from utils.rewards import load_reward_model

RECORDS = [
    {"prompt": "User: How are you?\nAssistant:", "conversation": "Human: How are you?\n\nAssistant:",
     "results": "I am great, thank you so much! What a wonderful day.\nUser: and you?", "response": "..."},
    {"prompt": "User: My cat is ill.\nAssistant:", "conversation": "Human: My cat is ill.\n\nAssistant:",
     "results": "That is terrible and sad news, I am sorry.", "response": "..."},
    {"prompt": "User: Weather?\nAssistant:", "conversation": "Human: Weather?\n\nAssistant:",
     "results": "the rain the rain the rain falls", "response": "..."},
]


def write_run(out, name, records):
    os.makedirs(os.path.join(out, "response"), exist_ok=True)
    with open(os.path.join(out, "response", f"{name}.json"), "w") as f:
        json.dump(records, f)


def read(out, folder, name):
    with open(os.path.join(out, folder, f"{name}.json")) as f:
        return json.load(f)


def test_measure_reward_vader_cuts_at_the_next_turn(tmp_path):
    out = str(tmp_path)
    write_run(out, "run", RECORDS)
    measure_reward.main(["--out_file", "run", "--output_dir", out])
    result = read(out, "final_reward", "run")
    vader = load_reward_model("vader")
    expected = vader.score([""] * 3, ["I am great, thank you so much! What a wonderful day.",
                                      RECORDS[1]["results"], RECORDS[2]["results"]], progress=False)
    assert result["rewards"] == pytest.approx(expected)
    assert result["average_reward"] == pytest.approx(sum(expected) / 3)
    assert result["count"] == 3 and result["standard_error"] > 0
    assert result["rewards"][0] > 0 > result["rewards"][1]


def test_measure_reward_paired_difference(tmp_path):
    out = str(tmp_path)
    write_run(out, "base", RECORDS)
    steered = [dict(r, results="Wonderful, happy, great news!") for r in RECORDS]
    write_run(out, "steered", steered)
    measure_reward.main(["--out_file", "base", "--output_dir", out])
    measure_reward.main(["--out_file", "steered", "--baseline", "base", "--output_dir", out])
    base, result = read(out, "final_reward", "base"), read(out, "final_reward", "steered")
    diffs = [a - b for a, b in zip(result["rewards"], base["rewards"])]
    assert result["paired_difference"] == pytest.approx(sum(diffs) / 3)
    assert result["paired_difference"] > 0


@pytest.mark.parametrize("rm_fixture", ["tiny_seqcls_rm_dir", "tiny_ultrarm_dir"])
def test_measure_reward_with_model_reward(tmp_path, request, rm_fixture):
    folder = request.getfixturevalue(rm_fixture)
    out = str(tmp_path)
    write_run(out, "run", RECORDS)
    measure_reward.main(["--out_file", "run", "--reward_model", folder, "--device", "cpu", "--batch_size", "2",
                         "--output_dir", out])
    rm = load_reward_model(folder, device="cpu")
    texts_conv = [r["conversation"] for r in RECORDS]
    answers = ["I am great, thank you so much! What a wonderful day.", RECORDS[1]["results"], RECORDS[2]["results"]]
    one_by_one = [rm.score([c], [a], progress=False)[0] for c, a in zip(texts_conv, answers)]
    assert read(out, "final_reward", "run")["rewards"] == pytest.approx(one_by_one, abs=1e-5)


def test_measure_reward_missing_run_names_stage_4(tmp_path):
    with pytest.raises(UsageError, match="inference_intervention.py"):
        measure_reward.main(["--out_file", "nothing", "--output_dir", str(tmp_path)])


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory, tiny_tokenizer):
    import torch
    from transformers import BertConfig, BertModel
    folder = str(tmp_path_factory.mktemp("tiny-bert"))
    torch.manual_seed(3)
    config = BertConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=256, pad_token_id=tiny_tokenizer.pad_token_id)
    BertModel(config).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


def test_coherence_is_the_cosine_of_cls_states(tiny_bert_dir):
    import torch
    from transformers import AutoModel, AutoTokenizer

    from utils.metrics import coherence_scores, load_encoder
    prompts, answers = ["How are you?", "Why is the sky blue?"], ["I am fine, thanks.", "Because of scattering."]
    scores = coherence_scores(prompts, answers, load_encoder(tiny_bert_dir))
    tok, model = AutoTokenizer.from_pretrained(tiny_bert_dir), AutoModel.from_pretrained(tiny_bert_dir).eval()
    with torch.no_grad():
        for p, a, score in zip(prompts, answers, scores):
            e = [model(**tok(t, return_tensors="pt")).last_hidden_state[0, 0] for t in (p, a)]
            assert score == pytest.approx(torch.nn.functional.cosine_similarity(e[0], e[1], dim=0).item(), abs=1e-5)


def test_coherence_with_the_offline_minilm_folder():
    from utils.metrics import coherence_scores, load_encoder
    related, unrelated = coherence_scores(["How do I bake bread at home?"] * 2,
                                          ["Mix flour, water, yeast and salt, let the dough rise, then bake it.",
                                           "The stock market closed lower on Tuesday."], load_encoder("minilm"))
    assert related > unrelated


def test_metrics_script_golden(tmp_path, tiny_bert_dir):
    out = str(tmp_path)
    write_run(out, "run", RECORDS)
    metrics.main(["--run_name", "run", "--output_dir", out, "--embedding_model", tiny_bert_dir])
    result = read(out, "evaluations", "run")
    tokens = "the rain the rain the rain falls".split()
    row = result["rows"][2]
    # bigrams: the-rain x3, rain-the x2, rain-falls: 6 total, 3 unique
    assert row["rep-2"] == pytest.approx(100 * (1 - 3 / 7))
    assert row["diversity"] == pytest.approx(diversity(tokens))
    assert row["length"] == 7
    assert result["rows"][0]["length"] == 14, "cut before 'User:'; punctuation is its own token"
    assert result["diversity"] == pytest.approx(sum(r["diversity"] for r in result["rows"]) / 3)
    assert result["rep-3"] == pytest.approx(sum(r["rep-3"] for r in result["rows"]) / 3)
    assert result["tokenizer"] in (["punkt"], ["preserve_line"])
    assert rep_n(tokens, 3) == pytest.approx(row["rep-3"])
    assert result["coherence"] == pytest.approx(sum(r["coherence"] for r in result["rows"]) / 3)
    assert all(-1 <= r["coherence"] <= 1 for r in result["rows"])


def test_make_table_gathers_every_stage(tmp_path, tiny_bert_dir):
    import csv

    import make_table
    out = str(tmp_path)
    steered = [dict(r, results="Wonderful, happy, great news!") for r in RECORDS]
    write_run(out, "m_d_base", RECORDS)
    write_run(out, "m_d_0.001_10_4.0", steered)
    for name, meta in (("m_d_base", {"method": "base", "seconds": 12.5, "prompting": False}),
                       ("m_d_0.001_10_4.0", {"method": "RE-Control", "seconds": 14.0, "prompting": False,
                                             "step_size": 4.0, "num_updates": 10,
                                             "value_model": {"num_layers": 2, "hidden_dim": 8, "test_loss": 0.5,
                                                             "test_terminal_loss": 0.2,
                                                             "baseline_terminal_loss": 0.3}})):
        with open(os.path.join(out, "response", f"{name}.meta.json"), "w") as f:
            json.dump(meta, f)
        measure_reward.main(["--out_file", name, "--output_dir", out])
        metrics.main(["--run_name", name, "--output_dir", out, "--embedding_model", tiny_bert_dir])
    make_table.main(["--model_name", "m", "--dataset_name", "d", "--output_dir", out])
    with open(os.path.join(out, "results", "m_d_table.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == ["m_d_base", "m_d_0.001_10_4.0"]
    assert rows[1]["method"] == "RE-Control (α=4.0, n=10)" and rows[0]["method"] == "Base"
    base, run = read(out, "final_reward", "m_d_base"), read(out, "final_reward", "m_d_0.001_10_4.0")
    assert float(rows[1]["vs base"]) == pytest.approx(run["average_reward"] - base["average_reward"])
    assert float(rows[0]["diversity"]) == pytest.approx(read(out, "evaluations", "m_d_base")["diversity"])
    assert float(rows[1]["time (s)"]) == 14.0 and rows[0]["win rate %"] == ""
    table = open(os.path.join(out, "results", "m_d_table.md")).read()
    assert "judge was skipped" in table and "loss on the test split 0.5000" in table
    assert os.path.getsize(os.path.join(out, "results", "m_d_rewards.png")) > 1000
