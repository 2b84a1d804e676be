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


def test_metrics_script_golden(tmp_path):
    out = str(tmp_path)
    write_run(out, "run", RECORDS)
    metrics.main(["--run_name", "run", "--output_dir", out])
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
