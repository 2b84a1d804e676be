"""Identities of the comparison methods on a tiny random Llama: each reduces to plain decoding at its zero setting."""
import pytest
import torch

from conftest import QUESTIONS, build_model
from helpers import PlantedReward, copy_of, planted_score, tag
from utils.features import SequenceData
from utils.generation import decode_rows, generate_batch, generation_config
from utils.methods import StaticIntervention, args_decode, best_of_n, cd_prefix_decode, linear_probe_direction
from utils.metrics import cut_at_next_turn
from utils.rewards import VaderReward
from utils.value_model import ValueModel

PROMPTS = [f"User: {q}\nAssistant:" for q in QUESTIONS[:3]]
CONVERSATIONS = [f"Human: {q}\n\nAssistant:" for q in QUESTIONS[:3]]
NEW = 6


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    return build_model("llama", tiny_tokenizer)


def plain(model, tok, do_sample, seed=0, k=1):
    torch.manual_seed(seed)
    config = generation_config(model, tok, NEW, do_sample=do_sample, num_return_sequences=k)
    return decode_rows(tok, *generate_batch(model, tok, PROMPTS, config))


def test_static_re_strength_zero_equals_base_and_nonzero_differs(model, tiny_tokenizer):
    base = plain(model, tiny_tokenizer, False)
    direction = torch.nn.functional.normalize(torch.randn(32), dim=0)
    with StaticIntervention(model, direction, 0.0):
        assert plain(model, tiny_tokenizer, False) == base
    with StaticIntervention(model, direction, 50.0):
        assert plain(model, tiny_tokenizer, False) != base


def test_linear_probe_recovers_a_planted_direction():
    torch.manual_seed(0)
    truth = torch.nn.functional.normalize(torch.randn(8), dim=0)
    features = torch.randn(400, 8)
    lengths = torch.full((100,), 4)
    labels = (features.view(100, 4, 8) @ truth).mean(1)
    direction = linear_probe_direction(SequenceData(features, lengths, labels), ridge=1e-4)
    assert torch.dot(direction, truth) > 0.95


def test_best_of_one_equals_sampling(model, tiny_tokenizer):
    sampled = plain(model, tiny_tokenizer, True, seed=3)
    torch.manual_seed(3)
    chosen = best_of_n(model, tiny_tokenizer, PROMPTS, CONVERSATIONS, VaderReward(), 1, max_new_tokens=NEW)
    assert chosen == sampled


def test_best_of_n_keeps_the_highest_reward(model, tiny_tokenizer):
    """VADER scores a random model's text 0.0 throughout (any pick would pass): a planted reward instead, and the
    argmax worked out here from the candidates that plain sampling draws with the same seed."""
    responses, results = plain(model, tiny_tokenizer, True, seed=4, k=4)
    torch.manual_seed(4)
    _, chosen = best_of_n(model, tiny_tokenizer, PROMPTS, CONVERSATIONS, PlantedReward(batch_size=64), 4,
                          max_new_tokens=NEW)
    picks = []
    for i, answer in enumerate(chosen):
        candidates = results[4 * i:4 * i + 4]
        scores = [planted_score(cut_at_next_turn(c)) for c in candidates]
        assert len(set(scores)) == 4, "no ties: the choice is determined"
        picks.append(scores.index(max(scores)))
        assert answer == candidates[picks[-1]]
    assert any(p != 0 for p in picks), "the reward's choice matters somewhere (the test can fail)"


def test_args_weight_zero_equals_greedy(model, tiny_tokenizer):
    greedy = plain(model, tiny_tokenizer, False)
    assert args_decode(model, tiny_tokenizer, PROMPTS, CONVERSATIONS, VaderReward(), top_k=5, weight=0.0,
                       max_new_tokens=NEW) == greedy


def test_cd_prefix_one_candidate_equals_sampling(model, tiny_tokenizer):
    sampled = plain(model, tiny_tokenizer, True, seed=5)
    torch.manual_seed(5)
    value_model = ValueModel(32, 8, 2)
    torch.manual_seed(5)
    assert cd_prefix_decode(model, tiny_tokenizer, PROMPTS, value_model, num_candidates=1, block_size=2,
                            max_new_tokens=NEW) == sampled


# ----------------------------------------------------------------------------------------------------------------------
# decode_methods.py end to end; its outputs are read by stages 5 and 6
# (pipeline and qfile: conftest's module fixtures, stages 1-3 on the tiny Llama)


@pytest.fixture(scope="module")
def varied(pipeline, tiny_llama_dir, tmp_path_factory):
    """A copy of the stages 1-3 outputs whose training labels vary (VADER finds little sentiment in a random model's
    text, and a probe of constant labels has no direction: Static RE refuses it)."""
    import os
    import shutil

    from utils.io import save_tensors
    out = str(tmp_path_factory.mktemp("varied") / "run")
    shutil.copytree(pipeline, out)
    path = os.path.join(out, "features", f"{tag(tiny_llama_dir)}_toy_labels_train.json")
    count = torch.load(path, weights_only=True).numel()
    save_tensors(torch.linspace(-1, 1, count), path)
    return out


@pytest.mark.parametrize("method,extra,name", [
    ("static_re", ["--strength", "2.0"], "static_re_2.0"),
    ("best_of_n", ["--num_candidates", "2"], "best_of_n_2"),
    ("args", ["--top_k", "3", "--weight", "1.0"], "args_3_1.0"),
    ("cd_prefix", ["--num_candidates", "2", "--block_size", "2", "--value_lr", "0.001"], "cd_prefix_0.001_ep3_bs2_2_2"),
])
def test_decode_methods_outputs_are_read_by_stages_5_and_6(varied, tiny_llama_dir, qfile, method, extra, name,
                                                           tmp_path):
    import json
    import os

    import decode_methods
    import measure_reward
    import metrics
    m, varied = tag(tiny_llama_dir), copy_of(varied, tmp_path)
    decode_methods.main(["--model_name", tiny_llama_dir, "--dataset_name", "toy", "--data_file", qfile, "--device",
                         "cpu", "--max_new_tokens", "4", "--batch_size", "2", "--output_dir", varied,
                         "--method", method, *extra])
    run = f"{m}_toy_{name}"
    with open(os.path.join(varied, "response", f"{run}.json")) as f:
        records = json.load(f)
    assert len(records) == 4 and all(set(r) == {"prompt", "response", "results", "conversation"} for r in records)
    with open(os.path.join(varied, "response", f"{run}.meta.json")) as f:
        assert json.load(f)["method"] == method
    measure_reward.main(["--out_file", run, "--output_dir", varied])
    metrics.main(["--run_name", run, "--output_dir", varied, "--embedding_model", "minilm"])
    with open(os.path.join(varied, "final_reward", f"{run}.json")) as f:
        assert json.load(f)["count"] == 4
    judged = judge_against_base(varied, run, f"{m}_toy_base")
    assert judged["win"] + judged["tie"] + judged["lose"] == 4 and judged["errors"] == 0


def judge_against_base(out, red, blue):
    """Stage 7 on the run, against a local chat-completions server that always answers '6 5'."""
    import json
    import os
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import gpt4_eval
    import inference_intervention

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "judge",
                               "choices": [{"index": 0, "finish_reason": "stop",
                                            "message": {"role": "assistant", "content": "6 5\nok"}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    if not os.path.exists(os.path.join(out, "response", f"{blue}.json")):
        args = json.load(open(os.path.join(out, "response", f"{red}.meta.json")))["args"]
        inference_intervention.main(["--model_name", args["model_name"], "--dataset_name", "toy", "--data_file",
                                     args["data_file"], "--device", "cpu", "--max_new_tokens", "4",
                                     "--output_dir", out])
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        gpt4_eval.main(["--run_name_red", red, "--run_name_blue", blue, "--output_dir", out, "--base_url",
                        f"http://127.0.0.1:{server.server_address[1]}/v1", "--retry_delay", "0"])
    finally:
        server.shutdown()
    with open(os.path.join(out, "gpt-4-evaluations", f"{red}_{blue}.json")) as f:
        return json.load(f)


def test_compare_methods_writes_one_row_per_method(varied, tiny_llama_dir, qfile, monkeypatch, tmp_path):
    import csv
    import os

    from transformers import AutoModelForCausalLM

    import compare_methods
    varied = copy_of(varied, tmp_path)
    loads, original = [], AutoModelForCausalLM.from_pretrained

    def counting(*args, **kwargs):
        loads.append(args[0])
        return original(*args, **kwargs)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", counting)
    compare_methods.main(["--model_name", tiny_llama_dir, "--dataset_name", "toy", "--device", "cpu",
                          "--max_new_tokens", "3", "--batch_size", "2", "--limit", "3", "--num_candidates", "2",
                          "--top_k", "2", "--block_size", "2", "--output_dir", varied, "--lr", "1.0", "--epochs",
                          "2", "--value_lr", "0.001", "--data_file", qfile, "--overwrite", "True"])
    stem = os.path.join(varied, "results", f"{tag(tiny_llama_dir)}_toy_comparison")
    with open(stem + ".csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["Base", "Prompting", "RE-Control (α=1.0, n=2)",
                                           "RE-Control + Prompting (α=1.0, n=2)", "Static RE", "Best-of-N", "ARGS",
                                           "CD prefix"]
    assert all(float(r["time (s)"]) > 0 for r in rows) and rows[0]["vs base"] == ""
    assert all(r["vs base"] != "" for r in rows[1:])
    assert os.path.getsize(stem + ".png") > 1000 and os.path.exists(stem + ".md")
    assert len(loads) == 1, f"the LLM is loaded once for the eight methods, not {len(loads)} times"
