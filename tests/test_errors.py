"""Bad input: every case of the issue as a real command line. Each prints one line naming the problem and the fix,
exits with status 2, prints no traceback, and leaves the output folder as it was.

RECONTROL_ERROR_TABLE=path pytest tests/test_errors.py writes the cases and their messages as a Markdown table
(the README's "When things go wrong")."""
import json
import os
import re
import resource
import subprocess
import sys

import pytest
import torch

from conftest import QUESTIONS, ROOT, write_jsonl
from helpers import run_in_process, snapshot
from utils.features import write_rows
from utils.io import save_tensors
from utils.value_model import ValueModel, save_value_model

D = "toy"


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_llama_dir):
    """A folder with the files the cases start from: data files, stage-1/2 outputs, value models."""
    root = tmp_path_factory.mktemp("errors")
    m = os.path.basename(tiny_llama_dir)
    for split in ("train", "test"):
        write_jsonl(root / f"q_{split}.jsonl", [{"question": q} for q in QUESTIONS])
    (root / "empty_train.jsonl").write_text("")
    (root / "malformed_train.jsonl").write_text('{"question": "fine"}\n{"question": \n')
    write_jsonl(root / "noprompt_train.jsonl", [{"title": "no prompt field here"}])
    feats = root / "out" / "features"
    mask = torch.tensor([[True, True, False], [True, False, False]])
    rows = torch.randn(3, 32)
    write_rows(str(feats / f"{m}_{D}_token_wise_activations_train.safetensors"), 3, 32, torch.float16, [(0, rows)])
    save_tensors(mask, str(feats / f"{m}_{D}_mask_train.pth"))
    save_tensors(torch.tensor([0.5, 0.1, 0.9]), str(feats / f"{m}_{D}_labels_train.json"))  # 3 labels, 2 responses
    nan = root / "nan" / "features"
    rows[1, 4] = float("nan")
    for split in ("train", "test"):
        write_rows(str(nan / f"{m}_{D}_token_wise_activations_{split}.safetensors"), 3, 32, torch.float16,
                   [(0, rows)])
        save_tensors(mask, str(nan / f"{m}_{D}_mask_{split}.pth"))
        save_tensors(torch.tensor([0.5, 0.1]), str(nan / f"{m}_{D}_labels_{split}.json"))
    big = root / "big" / "features"
    for split in ("train", "test"):
        write_rows(str(big / f"{m}_{D}_token_wise_activations_{split}.safetensors"), 3, 32, torch.float16,
                   [(0, torch.randn(3, 32))])
        save_tensors(mask, str(big / f"{m}_{D}_mask_{split}.pth"))
        save_tensors(torch.tensor([0.5, 0.1]), str(big / f"{m}_{D}_labels_{split}.json"))
    models = root / "out" / "trained_model"
    save_value_model(ValueModel(16, 16, 2), str(models / f"value_model_{m}_{D}_0.1"), llm=tiny_llama_dir)
    save_value_model(ValueModel(32, 32, 2), str(models / f"value_model_{m}_{D}_0.2"), llm="another/llm")
    with open(root / "sweep_for_another.json", "w") as f:  # a sweep.py result chosen for another value model
        json.dump({"method": "re_control", "model_name": tiny_llama_dir, "rule": "paper", "cells": [], "rules": {},
                   "chosen": {"step_size": 1.0, "num_updates": 2}, "tuned": ["num_updates", "step_size"],
                   "value_model_sha256": "0" * 64}, f)
    save_value_model(ValueModel(32, 32, 2), str(models / "served"), llm=tiny_llama_dir)
    (root / "not_a_folder").write_text("a file where the output folder should be\n")
    with open(root / "pickle.pth", "wb") as f:
        f.write(b"\x80\x04\x95not a tensor file")
    os.makedirs(root / "response", exist_ok=True)
    for colour in ("red", "blue"):
        with open(root / "response" / f"{colour}.json", "w") as f:
            json.dump([{"prompt": f"User: {q}\nAssistant:", "results": f"{colour} answer"} for q in QUESTIONS], f)
    return str(root), m


def llm_flags(model_dir, root, *extra):
    return ["--model_name", model_dir, "--dataset_name", D, "--data_file", os.path.join(root, "q_{split}.jsonl"),
            "--device", "cpu", "--max_new_tokens", "3", "--batch_size", "2", "--output_dir",
            os.path.join(root, "out"), *extra]


def cases(model_dir, root, m):
    """(case, command, expected part of the message)."""
    out = os.path.join(root, "out")
    stage4 = ["inference_intervention.py", *llm_flags(model_dir, root)]
    return [
        ("missing earlier-stage output", ["reward_label.py", "--model_name", m, "--dataset_name", "nothing",
                                          "--output_dir", out],
         "not found; run get_activations_only.py first"),
        ("count mismatch: features, masks, labels", ["train_value_model.py", "--model_name", m, "--dataset_name", D,
                                                     "--output_dir", out],
         "train: 3 labels for 2 responses; re-run reward_label.py --mode train"),
        ("value model for another hidden size", [*stage4, "--use_intervention", "True", "--value_lr", "0.1"],
         "the value model reads 16-dim states but"),
        ("value model of another LLM", [*stage4, "--use_intervention", "True", "--value_lr", "0.2"],
         "the value model was trained on another/llm's states"),
        ("unknown model name", ["get_activations_only.py", "--model_name", "vicuna_13B", "--output_dir", out],
         "unknown model 'vicuna_13B'"),
        ("unknown dataset name", ["get_activations_only.py", "--model_name", model_dir, "--dataset_name", "nosuch",
                                  "--device", "cpu", "--output_dir", out],
         "unknown dataset 'nosuch'"),
        ("empty data file", ["get_activations_only.py", *llm_flags(model_dir, root, "--data_file",
                                                                    os.path.join(root, "empty_{split}.jsonl"))],
         "is empty"),
        ("malformed data file", ["get_activations_only.py", *llm_flags(model_dir, root, "--data_file",
                                                                        os.path.join(root, "malformed_{split}.jsonl"))],
         "line 2 is neither JSON nor JSON lines"),
        ("data file without a prompt field", ["get_activations_only.py", *llm_flags(
            model_dir, root, "--data_file", os.path.join(root, "noprompt_{split}.jsonl"))],
         "a record has none of the prompt fields"),
        ("every prompt longer than the limit", ["get_activations_only.py", *llm_flags(model_dir, root,
                                                                                     "--max_prompt_tokens", "2")],
         "every train prompt is longer than --max_prompt_tokens 2"),
        ("NaN or inf in the features", ["train_value_model.py", "--model_name", m, "--dataset_name", D,
                                        "--output_dir", os.path.join(root, "nan"), "--device", "cpu"],
         "the features contain NaN or inf"),
        ("NaN or inf in the loss", ["train_value_model.py", "--model_name", m, "--dataset_name", D, "--lr", "1e30",
                                    "--output_dir", os.path.join(root, "big"), "--device", "cpu", "--epochs", "5"],
         "the loss became NaN or inf at epoch"),
        ("reward model that cannot be loaded", ["measure_reward.py", "--out_file", "red", "--reward_model",
                                                os.path.join(root, "no-such-rm"), "--output_dir", root],
         "cannot load reward model"),
        ("unreachable judge endpoint (after retries)", ["gpt4_eval.py", "--run_name_red", "red", "--run_name_blue",
                                                        "blue", "--base_url", "http://127.0.0.1:9/v1",
                                                        "--max_retries", "1", "--retry_delay", "0.01",
                                                        "--timeout", "0.5", "--output_dir", root],
         "cannot be reached"),
        ("output folder that cannot be written", ["get_activations_only.py", *llm_flags(model_dir, root)[:-1],
                                                  os.path.join(root, "not_a_folder")],
         "cannot write to"),
        ("a tensor file that is not one (e.g. a pickle)", ["train_value_model.py", "--model_name", m, "--dataset_name",
                                                           D, "--output_dir", os.path.join(root, "pickled")],
         "as a tensor file"),
        ("step size alpha < 0", [*stage4, "--lr", "-1"], "argument --lr/--step_size: must be >= 0.0, got -1"),
        ("number of updates n < 0", [*stage4, "--epochs", "-1"],
         "argument --epochs/--num_updates: must be >= 0, got -1"),
        ("batch size 0", [*stage4, "--batch_size", "0"], "argument --batch_size: must be >= 1, got 0"),
        ("--limit 0", [*stage4, "--limit", "0"], "argument --limit: must be >= 1, got 0"),
        ("--settings_from a file that is not a sweep result", [*stage4, "--use_intervention", "True", "--value_lr",
                                                               "0.2", "--settings_from",
                                                               os.path.join(root, "response", "red.json")],
         "is not a sweep result (no 'chosen' and 'cells'); write one with sweep.py"),
        ("early stopping without a validation slice", ["train_value_model.py", "--early_stopping", "True",
                                                       "--output_dir", out],
         "--early_stopping True needs a validation slice: pass --val_fraction"),
        ("refits without their edit", ["train_value_model.py", "--rounds", "2", "--output_dir", out],
         "--rounds 2 regenerates rollouts with the edit on: pass --refit_step_size and --refit_num_updates"),
        ("a refit edit without refits", ["train_value_model.py", "--refit_step_size", "1", "--output_dir", out],
         "--refit_step_size and --refit_num_updates set the refits' edit: pass --rounds 2 or more"),
        ("TD(lambda) outside [0, 1]", ["train_value_model.py", "--td_lambda", "1.5", "--output_dir", out],
         "argument --td_lambda: must be <= 1.0, got 1.5"),
        ("a sweep with an empty grid", ["sweep.py", *llm_flags(model_dir, root)[:-2],
                                                                    "--step_sizes", "", "--output_dir", out],
         "argument --step_sizes: give at least one value"),
        ("serve.py: a value model for another hidden size", [
            "serve.py", "--model_name", model_dir, "--value_model",
            f"small={os.path.join(out, 'trained_model', f'value_model_{m}_{D}_0.1')}"],
         "the value model reads 16-dim states but"),
        ("serve.py: a value model of another LLM", [
            "serve.py", "--model_name", model_dir, "--value_model",
            f"other={os.path.join(out, 'trained_model', f'value_model_{m}_{D}_0.2')}"],
         "the value model was trained on another/llm's states"),
        ("serve.py: a value model that is not there", ["serve.py", "--model_name", model_dir, "--value_model",
                                                       f"gone={os.path.join(root, 'no_such_value_model')}"],
         "--value_model gone="),
        ("serve.py: --value_model without a name", ["serve.py", "--model_name", model_dir, "--value_model",
                                                    os.path.join(root, "no_such_value_model")],
         "write NAME=PATH"),
        ("serve.py: a sweep chosen for another value model", [
            "serve.py", "--model_name", model_dir, "--value_model",
            f"ok={os.path.join(out, 'trained_model', 'served')}", "--settings_from",
            f"ok={os.path.join(root, 'sweep_for_another.json')}"],
         "was chosen for another value model, not for served"),
        ("serve.py: a vLLM flag that serve.py sets", ["serve.py", "--model_name", model_dir, "--model", "other"],
         "--model: pass --model_name"),
        ("a sweep on the test split", ["sweep.py", *llm_flags(model_dir, root)[:-2], "--split", "test",
                                       "--step_sizes", "1", "--num_updates", "1", "--output_dir", out],
         "run it on a tuning split (--split tune), never on the test split"),
    ]


def run(command, cwd, **kwargs):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, os.path.join(ROOT, command[0]), *command[1:]], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_every_bad_input_is_one_line_exit_2_and_changes_nothing(work, tiny_llama_dir, capfd):
    root, m = work
    pickled = os.path.join(root, "pickled", "features")
    os.makedirs(pickled, exist_ok=True)
    with open(os.path.join(root, "pickle.pth"), "rb") as f:
        data = f.read()
    with open(os.path.join(pickled, f"{m}_{D}_token_wise_activations_train.pth"), "wb") as f:
        f.write(data)
    before = snapshot(root)
    rows = []
    for case, command, expected in cases(tiny_llama_dir, root, m):
        code, stdout, stderr = run_in_process(command, capfd)
        lines = [line for line in stderr.replace("\r", "\n").splitlines()
                 if line.strip() and not re.search(r"(it/s|s/it)\]$", line.strip())]  # tqdm, fast or slow
        assert code == 2, f"{case}: exit {code}\n{stderr[-2000:]}"
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{case}: {stderr[-2000:]}"  # besides progress bars
        assert expected in lines[0], f"{case}: {lines[0]}"
        assert "Traceback" not in stdout + stderr
        rows.append((case, lines[0].replace(tiny_llama_dir, "<model folder>").replace(root, "…")
                     .replace("__main__.py", command[0])))
    assert snapshot(root) == before, "a refused command writes nothing"
    if os.environ.get("RECONTROL_ERROR_TABLE"):
        with open(os.environ["RECONTROL_ERROR_TABLE"], "w") as f:
            f.write("| case | what the tool prints (exit status 2) |\n|---|---|\n")
            f.writelines(f"| {case} | `{message}` |\n" for case, message in rows)


def test_a_bad_flag_from_the_shell_is_one_line(tmp_path):
    """The same contract through a real interpreter: argparse's refusal is one line too, with exit status 2."""
    proc = run(["inference_intervention.py", "--lr", "-1"], str(tmp_path))
    code = proc.wait(timeout=120)
    stdout, stderr = proc.communicate()
    assert code == 2 and stderr.strip() == ("error: argument --lr/--step_size: must be >= 0.0, got -1; "
                                            "see inference_intervention.py --help")


def test_full_disk_during_a_write_keeps_the_batches_and_resumes(tmp_path, tiny_llama_dir):
    """A file-size limit makes the final write fail as a full disk would: one line, exit 2, no file under the final
    name, the finished batches kept; the same command then completes, identical to an uninterrupted run."""
    root = str(tmp_path)
    for split in ("train", "test"):
        write_jsonl(tmp_path / f"q_{split}.jsonl", [{"question": q} for q in QUESTIONS])
    command = ["get_activations_only.py", *llm_flags(tiny_llama_dir, root, "--splits", "train",
                                                     "--feature_dtype", "float32", "--max_new_tokens", "20")]
    limit = 8192  # each batch file (about 5 kB) fits, the merged features (about 15 kB) do not

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    proc = run(command, root, preexec_fn=small_disk)
    code = proc.wait(timeout=180)
    stdout, stderr = proc.communicate()
    last = stderr.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in stderr, stderr[-2000:]
    assert last.startswith("error: writing ") and "failed (File too large); free disk space" in last, last
    features = os.path.join(root, "out", "features")
    assert not [f for f in os.listdir(features) if not f.endswith(".parts")], "no file under a final name"
    parts = os.path.join(features, f"{os.path.basename(tiny_llama_dir)}_{D}_response_train.json.parts")
    assert len([f for f in os.listdir(parts) if f.endswith(".json")]) == 1 + 3, "the 3 batches are kept"
    proc = run(command, root)
    assert proc.wait(timeout=180) == 0, proc.communicate()[1][-2000:]
    assert "3 of 3 batches already done" in proc.communicate()[1]
    whole = str(tmp_path / "whole")
    os.makedirs(whole)
    command_whole = [c if c != os.path.join(root, "out") else os.path.join(whole, "out") for c in command]
    proc = run(command_whole, root)
    assert proc.wait(timeout=180) == 0
    resumed, fresh = snapshot(os.path.join(root, "out")), snapshot(os.path.join(whole, "out"))
    resumed = {k: v for k, v in resumed.items() if not k.endswith(".meta.json")}
    assert resumed == {k: v for k, v in fresh.items() if not k.endswith(".meta.json")}
    with open(os.path.join(root, "out", "features", os.path.basename(parts).removesuffix(".parts"))) as f:
        assert len(json.load(f)) == len(QUESTIONS)
