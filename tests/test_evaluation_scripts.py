"""Stages 5-6 as scripts: measure_reward.py on VADER and the tiny reward models, metrics.py on a hand-made run."""
import json
import os

import pytest

import measure_reward
import metrics
from utils.errors import UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RECORDS = [
    {"prompt": "User: How are you?\nAssistant:", "conversation": "Human: How are you?\n\nAssistant:",
     "results": "I am great, thank you so much! What a wonderful day.\nUser: and you? I hate awful days.",
     "response": "..."},
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
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer  # the package itself is the oracle
    analyzer = SentimentIntensityAnalyzer()
    expected = [analyzer.polarity_scores(text)["compound"] for text in
                ["I am great, thank you so much! What a wonderful day.", RECORDS[1]["results"], RECORDS[2]["results"]]]
    assert expected[0] != analyzer.polarity_scores(RECORDS[0]["results"])["compound"], "the cut changes the score"
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


def test_the_policy_and_data_set_names_are_recorded_not_compared(tmp_path, capsys):
    """--model_name and --dataset_name only describe a stage-5 run: the sidecar keeps them, and a run scored under
    other names (or before they were left out of the settings, when they were compared) counts as already scored."""
    out = str(tmp_path)
    write_run(out, "run", RECORDS)
    measure_reward.main(["--out_file", "run", "--output_dir", out, "--dataset_name", "demo_polar"])
    path = os.path.join(out, "final_reward", "run.meta.json")
    meta = read(out, "final_reward", "run.meta")
    assert meta["args"]["dataset_name"] == "demo_polar" and "dataset_name" not in meta["settings"]
    written = os.stat(os.path.join(out, "final_reward", "run.json")).st_mtime_ns
    measure_reward.main(["--out_file", "run", "--output_dir", out])  # the default names
    assert "already scored with these settings" in capsys.readouterr().out
    # a sidecar written before: the names inside the settings
    with open(path, "w") as f:
        json.dump(dict(meta, settings=dict(meta["settings"], dataset_name="demo_polar", model_name="x")), f)
    measure_reward.main(["--out_file", "run", "--output_dir", out, "--dataset_name", "demo"])
    assert "already scored with these settings" in capsys.readouterr().out
    assert os.stat(os.path.join(out, "final_reward", "run.json")).st_mtime_ns == written
    # a real setting still counts
    with pytest.raises(UsageError, match=r"--reward_model vader there, textblob now"):
        measure_reward.main(["--out_file", "run", "--output_dir", out, "--reward_model", "textblob"])


@pytest.mark.parametrize("rm_fixture", ["tiny_seqcls_rm_dir", "tiny_ultrarm_dir"])
def test_measure_reward_with_a_reward_model_equals_its_scores_by_hand(tmp_path, request, rm_fixture):
    folder = request.getfixturevalue(rm_fixture)
    out = str(tmp_path)
    write_run(out, "run", RECORDS)
    measure_reward.main(["--out_file", "run", "--reward_model", folder, "--device", "cpu", "--batch_size", "2",
                         "--output_dir", out])
    answers = ["I am great, thank you so much! What a wonderful day.", RECORDS[1]["results"], RECORDS[2]["results"]]
    by_hand = hand_scores(folder, [f"{r['conversation']} {a}" for r, a in zip(RECORDS, answers)])
    assert read(out, "final_reward", "run")["rewards"] == pytest.approx(by_hand, rel=1e-4, abs=1e-5)


def hand_scores(folder, texts):
    """The reward of each text alone, from transformers and the checkpoint's tensors, with no class of ours: the
    classifier logit, or (UltraRM's shape) regression_head on a plain LlamaModel's last hidden state."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, LlamaModel
    tokenizer = AutoTokenizer.from_pretrained(folder)
    state = load_file(os.path.join(folder, "model.safetensors"))
    with torch.no_grad():
        if "regression_head.weight" not in state:
            model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
            return [model(**tokenizer(t, return_tensors="pt")).logits[0, 0].item() for t in texts]
        head = state.pop("regression_head.weight")[0]
        body = LlamaModel(AutoConfig.from_pretrained(folder)).eval()
        body.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
        return [(body(**tokenizer(t, return_tensors="pt")).last_hidden_state[0, -1] @ head).item() for t in texts]


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


def test_metrics_script_rep_n_diversity_and_length_equal_hand_counts(tmp_path, tiny_bert_dir):
    out = str(tmp_path)
    write_run(out, "run", RECORDS)
    metrics.main(["--run_name", "run", "--output_dir", out, "--embedding_model", tiny_bert_dir])
    result = read(out, "evaluations", "run")
    row = result["rows"][2]  # "the rain the rain the rain falls": 7 tokens
    # bigrams: the-rain x3, rain-the x2, rain-falls: 6 total, 3 unique
    assert row["rep-2"] == pytest.approx(100 * (1 - 3 / 7))
    # trigrams: the-rain-the x2, rain-the-rain x2, the-rain-falls: 5 total, 3 unique -> 100 * (1 - 3 / 6) = 50
    assert row["rep-3"] == pytest.approx(50.0)
    # 4-grams: the-rain-the-rain x2, rain-the-rain-the, rain-the-rain-falls: 4 total, 3 unique
    assert row["diversity"] == pytest.approx((3 / 7) * (3 / 6) * (3 / 5))
    assert row["length"] == 7
    assert result["rows"][0]["length"] == 14, "cut before 'User:'; punctuation is its own token"
    # row 0's 14 tokens are all distinct: (13 / 14) * (12 / 13) * (11 / 12) = 11 / 14
    assert result["rows"][0]["diversity"] == pytest.approx(11 / 14)
    assert result["diversity"] == pytest.approx(sum(r["diversity"] for r in result["rows"]) / 3)
    assert result["rep-3"] == pytest.approx(sum(r["rep-3"] for r in result["rows"]) / 3)
    assert result["tokenizer"] in (["punkt"], ["preserve_line"])
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


def test_make_table_says_when_the_value_model_comes_from_another_data_set():
    """Out of distribution (the demo's value model on demo_ood, HH-RLHF's on HarmfulQA): the table says so."""
    import make_table
    row = {"method": "RE-Control (α=3.0, n=10)", "win rate %": None, "settings from": None,
           "value model": {"dataset": "demo", "num_layers": 2, "hidden_dim": 8, "test_loss": 0.5}}
    note = make_table.notes([row], "demo_ood")
    assert "trained on demo's prompts and is applied here to demo_ood's: out of distribution" in note
    assert "out of distribution" not in make_table.notes([row], "demo")
    assert "out of distribution" not in make_table.notes([dict(row, **{"value model": None})], "demo_ood")


def test_score_runs_writes_what_the_two_scripts_write(tmp_path, tiny_bert_dir):
    """scripts/score_runs.py (stages 5-6 for several runs in one process) writes the same result files, byte for
    byte, as measure_reward.py and metrics.py run once per run; a second call skips every run."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("score_runs", os.path.join(ROOT, "scripts", "score_runs.py"))
    score_runs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(score_runs)
    steered = [dict(r, results="Wonderful, happy, great news!") for r in RECORDS]
    apart, together = str(tmp_path / "apart"), str(tmp_path / "together")
    for out in (apart, together):
        write_run(out, "base", RECORDS)
        write_run(out, "steered", steered)
    for run, pair in (("base", []), ("steered", ["--baseline", "base"])):
        measure_reward.main(["--out_file", run, "--output_dir", apart] + pair)
        metrics.main(["--run_name", run, "--output_dir", apart, "--embedding_model", tiny_bert_dir])
    argv = ["--output_dir", together, "--baseline", "base", "--embedding_model", tiny_bert_dir, "base", "steered"]
    score_runs.main(argv)
    for folder in ("final_reward", "evaluations"):
        for run in ("base", "steered"):
            with open(os.path.join(apart, folder, f"{run}.json"), "rb") as a, \
                    open(os.path.join(together, folder, f"{run}.json"), "rb") as b:
                assert a.read() == b.read(), (folder, run)
    assert "paired_difference" in read(together, "final_reward", "steered")
    assert "paired_difference" not in read(together, "final_reward", "base")
    stamps = [os.path.getmtime(os.path.join(together, f, f"{r}.json")) for f in ("final_reward", "evaluations")
              for r in ("base", "steered")]
    score_runs.main(argv)
    assert stamps == [os.path.getmtime(os.path.join(together, f, f"{r}.json")) for f in ("final_reward", "evaluations")
                      for r in ("base", "steered")]
