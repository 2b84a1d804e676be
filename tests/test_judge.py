"""gpt4_eval.py against a real HTTP server on 127.0.0.1 that speaks the chat-completions protocol."""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import gpt4_eval
from conftest import ROOT
from utils.errors import UsageError

# per prompt: how the server answers. Scores are keyed by the answers' text, so the random order cannot change them.
BEHAVIOUR = ["score", "score", "score", "score", "malformed", "http500", "timeout"]
RED_SCORES = [8, 9, 5, 2]
BLUE_SCORES = [3, 4, 5, 7]


class JudgeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), JudgeHandler)
        self.calls, self.hang_after, self.lock = [], None, threading.Lock()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class JudgeHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert self.path == "/v1/chat/completions"
        content = request["messages"][-1]["content"]
        server = self.server
        with server.lock:
            server.calls.append(content)
            hang = server.hang_after is not None and len(server.calls) > server.hang_after
        if hang:
            time.sleep(60)
            return
        i = int(re.search(r"question (\d+)", content).group(1))
        behaviour = BEHAVIOUR[i]
        if behaviour == "http500":
            return self.reply(500, {"error": {"message": "boom"}})
        if behaviour == "timeout":
            time.sleep(2)
            return self.reply(200, {})
        if behaviour == "malformed":
            text = "Both answers are fine, I cannot decide."
        else:
            first = "red" if content.index(f"red answer {i}") < content.index(f"blue answer {i}") else "blue"
            scores = (RED_SCORES[i], BLUE_SCORES[i]) if first == "red" else (BLUE_SCORES[i], RED_SCORES[i])
            text = f"{scores[0]} {scores[1]}\nExplanation follows."
        self.reply(200, {"id": "x", "object": "chat.completion", "created": 0, "model": request["model"],
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": text}}],
                         "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})


@pytest.fixture
def server():
    srv = JudgeServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()


def write_runs(out, n):
    os.makedirs(os.path.join(out, "response"), exist_ok=True)
    for colour in ("red", "blue"):
        records = [{"prompt": f"User: question {i}\nAssistant:", "conversation": f"Human: question {i}\n\nAssistant:",
                    "results": f"{colour} answer {i}", "response": ""} for i in range(n)]
        with open(os.path.join(out, "response", f"{colour}.json"), "w") as f:
            json.dump(records, f)


def judge_args(out, url, *extra):
    return ["--run_name_red", "red", "--run_name_blue", "blue", "--base_url", url, "--judge_model", "test-judge",
            "--output_dir", out, "--max_retries", "1", "--retry_delay", "0.01", "--timeout", "0.5", *extra]


def result(out, name="red_blue"):
    with open(os.path.join(out, "gpt-4-evaluations", f"{name}.json")) as f:
        return json.load(f)


def test_judge_counts_are_exact_failures_retried_once_and_the_key_never_written(tmp_path, server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-key")
    out = str(tmp_path)
    write_runs(out, len(BEHAVIOUR))
    gpt4_eval.main(judge_args(out, server.url))
    r = result(out)
    assert (r["win"], r["tie"], r["lose"], r["errors"]) == (2, 1, 1, 3)
    assert r["win_rate"] == pytest.approx(50.0), "errors are left out: 2 wins of 4 judged"
    assert [j["index"] for j in r["judgments"]] == list(range(7))
    assert {j["red_first"] for j in r["judgments"]} == {True, False}, "the order is randomised"
    for j in r["judgments"][:4]:
        assert (j["red_score"], j["blue_score"]) == (RED_SCORES[j["index"]], BLUE_SCORES[j["index"]])
    # every failure was retried once: 4 good prompts once, 3 bad ones twice
    assert len(server.calls) == 4 + 3 * 2
    for folder, _, files in os.walk(out):
        for name in files:
            assert "sk-test-secret-key" not in open(os.path.join(folder, name)).read()


def test_same_seed_same_order_other_seed_other_order(tmp_path, server):
    out = str(tmp_path)
    write_runs(out, 4)
    orders = []
    for seed in ("0", "0", "1"):
        gpt4_eval.main(judge_args(out, server.url, "--seed", seed, "--overwrite", "True"))
        orders.append([j["red_first"] for j in result(out)["judgments"]])
        os.remove(os.path.join(out, "gpt-4-evaluations", "red_blue.jsonl"))
    assert orders[0] == orders[1] and orders[0] != orders[2]


def test_preferred_responses_file_as_blue(tmp_path, server):
    out = str(tmp_path)
    write_runs(out, 4)
    prefer = tmp_path / "dataset_prefer.json"
    prefer.write_text(json.dumps([{"prefer": f"blue answer {i}"} for i in range(4)]))
    gpt4_eval.main(judge_args(out, server.url, "--run_name_blue", str(prefer)))
    r = result(out, "red_dataset_prefer")
    assert (r["win"], r["tie"], r["lose"]) == (2, 1, 1)


def test_interrupted_run_resumes_without_paying_twice(tmp_path, server):
    """kill -9 part-way through, then the same command: only the missing prompts reach the server."""
    out = str(tmp_path)
    n = 4
    write_runs(out, n)
    server.hang_after = 2
    log = os.path.join(out, "gpt-4-evaluations", "red_blue.jsonl")
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "gpt4_eval.py"),
                             *judge_args(out, server.url, "--timeout", "100")], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and len(server.calls) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with open(log) as f:
        header, *first = [json.loads(line) for line in f]
    assert header["settings"]["judge_model"] == "test-judge"
    assert len(first) == 2 and not os.path.exists(os.path.join(out, "gpt-4-evaluations", "red_blue.json"))
    server.calls.clear()
    server.hang_after = None
    gpt4_eval.main(judge_args(out, server.url))
    assert len(server.calls) == n - 2
    r = result(out)
    assert (r["win"], r["tie"], r["lose"], r["errors"]) == (2, 1, 1, 0)
    assert r["judgments"][:2] == first
    whole = str(tmp_path / "whole")
    write_runs(whole, n)
    gpt4_eval.main(judge_args(whole, server.url))
    with open(os.path.join(out, "gpt-4-evaluations", "red_blue.json"), "rb") as a, \
            open(os.path.join(whole, "gpt-4-evaluations", "red_blue.json"), "rb") as b:
        assert a.read() == b.read(), "the resumed result is byte-identical to an uninterrupted run"


def test_judgments_of_other_settings_are_refused_without_overwrite(tmp_path, server):
    out = str(tmp_path)
    write_runs(out, 3)
    gpt4_eval.main(judge_args(out, server.url))
    os.remove(os.path.join(out, "gpt-4-evaluations", "red_blue.json"))  # as if killed before the end
    with pytest.raises(UsageError, match="holds judgments made with other settings; run that command again"):
        gpt4_eval.main(judge_args(out, server.url, "--judge_model", "another-judge"))
    gpt4_eval.main(judge_args(out, server.url, "--judge_model", "another-judge", "--overwrite", "True"))
    assert result(out)["judge_model"] == "another-judge"


def test_api_key_never_reaches_files_or_messages(tmp_path, monkeypatch, capfd):
    """A server that echoes the key in its error: the key is in no output file and in no printed line."""
    key = "sk-test-SECRET-0123456789"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    out = str(tmp_path)
    write_runs(out, 2)
    with pytest.raises(UsageError) as err:
        gpt4_eval.main(["--run_name_red", "red", "--run_name_blue", "blue", "--base_url", "http://127.0.0.1:9/v1",
                        "--output_dir", out, "--max_retries", "1", "--retry_delay", "0.01", "--timeout", "0.5"])
    assert key not in str(err.value)
    from utils.stages.stage7_judge import redact
    assert redact(f"Incorrect API key provided: {key}.") == "Incorrect API key provided: ***."
    printed = capfd.readouterr()
    assert key not in printed.out + printed.err
    for root, _, files in os.walk(out):
        for name in files:
            with open(os.path.join(root, name), encoding="utf-8", errors="replace") as f:
                assert key not in f.read(), name


def test_unreachable_judge_is_one_clear_error(tmp_path):
    out = str(tmp_path)
    write_runs(out, 3)
    with pytest.raises(UsageError, match="cannot be reached"):
        gpt4_eval.main(judge_args(out, "http://127.0.0.1:9/v1"))


def test_judge_without_an_api_key_or_endpoint_is_refused(tmp_path, monkeypatch):
    for var in ("OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    out = str(tmp_path)
    write_runs(out, 2)
    with pytest.raises(UsageError, match="OPENAI_API_KEY"):
        gpt4_eval.main(["--run_name_red", "red", "--run_name_blue", "blue", "--output_dir", out])
