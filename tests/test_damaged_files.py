"""Damaged and foreign files: every file a stage reads, cut short, filled with random bytes, emptied, replaced by a
file of another kind, or (value models) made for another LLM. Each case is one line on stderr naming the file, exit
status 2, no traceback, and nothing written.

RECONTROL_DAMAGE_TABLE=path pytest tests/test_damaged_files.py writes the cases and their messages as a Markdown
table (the README's "When things go wrong")."""
import json
import os
import random
import shutil

import pytest
import torch

import get_activations_only
import inference_intervention
import measure_reward
import reward_label
import train_value_model
from conftest import QUESTIONS, write_jsonl
from helpers import run_in_process, snapshot
from utils.io import save_tensors
from utils.value_model import ValueModel, save_value_model

D = "toy"
DAMAGES = ("truncated", "random bytes", "empty", "another kind")


@pytest.fixture(scope="module")
def good(tmp_path_factory, tiny_llama_dir):
    """A run folder whose every stage succeeded: stages 1-5 on the tiny Llama, a sweep result and a judge log."""
    root = tmp_path_factory.mktemp("good")
    for split in ("train", "test"):
        write_jsonl(root / f"q_{split}.jsonl", [{"question": q} for q in QUESTIONS[:4]])
    out = str(root / "out")
    common = ["--model_name", tiny_llama_dir, "--dataset_name", D, "--output_dir", out]
    llm = common + ["--data_file", str(root / "q_{split}.jsonl"), "--device", "cpu", "--max_new_tokens", "3",
                    "--batch_size", "2"]
    get_activations_only.main(llm)
    for mode in ("train", "test"):
        reward_label.main(common + ["--mode", mode])
    m = os.path.basename(tiny_llama_dir)
    save_tensors(torch.linspace(-1, 1, 4), os.path.join(out, "features", f"{m}_{D}_labels_train.json"))
    train_value_model.main(common + ["--lr", "0.01", "--epochs", "2", "--device", "cpu"])
    inference_intervention.main(llm + ["--use_intervention", "False"])
    inference_intervention.main(llm + ["--use_intervention", "True", "--value_lr", "0.01", "--lr", "1", "--epochs",
                                       "2"])
    measure_reward.main(["--out_file", f"{m}_{D}_base", "--output_dir", out])
    sweep = {"model_name": tiny_llama_dir, "method": "re_control", "rule": "paper", "split": "tune",
             "chosen": {"step_size": 1.0, "num_updates": 2}, "rules": {}, "cells": []}
    with open(os.path.join(out, "results_sweep.json"), "w") as f:
        json.dump(sweep, f)
    os.makedirs(os.path.join(out, "gpt-4-evaluations"))
    with open(os.path.join(out, "gpt-4-evaluations", f"{m}_{D}_0.01_ep2_2_1.0_{m}_{D}_base.jsonl"), "w") as f:
        f.write(json.dumps({"settings": {}}) + "\n" + json.dumps({"index": 0, "outcome": "tie"}) + "\n")
    return str(root), m


def cases(root, model_dir, m):
    """(file, the command that reads it, a file of another kind to put in its place)."""
    out = os.path.join(root, "out")
    feats = os.path.join(out, "features")
    common = ["--model_name", model_dir, "--dataset_name", D, "--output_dir", out]
    llm = common + ["--data_file", os.path.join(root, "q_{split}.jsonl"), "--device", "cpu", "--max_new_tokens", "3"]
    stage3 = ["train_value_model.py", *common, "--lr", "0.01", "--epochs", "2", "--device", "cpu", "--overwrite",
              "True"]
    vm = os.path.join(out, "trained_model", f"value_model_{m}_{D}_0.01_ep2.safetensors")
    features = os.path.join(feats, f"{m}_{D}_token_wise_activations_train.safetensors")
    base = os.path.join(out, "response", f"{m}_{D}_base.json")
    steered = f"{m}_{D}_0.01_ep2_2_1.0"
    return [
        ("value model (stage 4)", vm, ["inference_intervention.py", *llm, "--use_intervention", "True",
                                       "--value_lr", "0.01", "--lr", "1", "--epochs", "2", "--overwrite", "True"],
         features),
        ("features (stage 3)", features, stage3, vm),
        ("mask (stage 3)", os.path.join(feats, f"{m}_{D}_mask_train.pth"), stage3,
         os.path.join(feats, f"{m}_{D}_labels_train.json")),
        ("labels (stage 3)", os.path.join(feats, f"{m}_{D}_labels_train.json"), stage3,
         os.path.join(feats, f"{m}_{D}_mask_train.pth")),
        ("stage-1 responses (stage 2)", os.path.join(feats, f"{m}_{D}_response_train.json"),
         ["reward_label.py", *common, "--mode", "train", "--overwrite", "True"],
         os.path.join(out, "final_reward", f"{m}_{D}_base.json")),
        ("stage-4 responses (stage 5)", base, ["measure_reward.py", "--out_file", f"{m}_{D}_base", "--output_dir",
                                               out, "--overwrite", "True"],
         os.path.join(out, "final_reward", f"{m}_{D}_base.json")),
        ("stage-4 responses (stage 6)", base, ["metrics.py", "--run_name", f"{m}_{D}_base", "--output_dir", out,
                                               "--embedding_model", "minilm", "--overwrite", "True"],
         os.path.join(out, "results_sweep.json")),
        ("stage-4 responses (stage 7)", base, ["gpt4_eval.py", "--run_name_red", steered, "--run_name_blue",
                                               f"{m}_{D}_base", "--output_dir", out, "--base_url",
                                               "http://127.0.0.1:9/v1"],
         os.path.join(out, "final_reward", f"{m}_{D}_base.json")),
        ("stage-5 baseline (stage 5 --baseline)", os.path.join(out, "final_reward", f"{m}_{D}_base.json"),
         ["measure_reward.py", "--out_file", steered, "--baseline", f"{m}_{D}_base", "--output_dir", out],
         base),
        ("sweep result (stage 4 --settings_from)", os.path.join(out, "results_sweep.json"),
         ["inference_intervention.py", *llm, "--use_intervention", "True", "--value_lr", "0.01", "--settings_from",
          os.path.join(out, "results_sweep.json"), "--overwrite", "True"], base),
        ("judge log (stage 7 resume)", os.path.join(out, "gpt-4-evaluations", f"{steered}_{m}_{D}_base.jsonl"),
         ["gpt4_eval.py", "--run_name_red", steered, "--run_name_blue", f"{m}_{D}_base", "--output_dir", out,
          "--base_url", "http://127.0.0.1:9/v1"], base),
    ]


def damage(path, how, other):
    with open(path, "rb") as f:
        data = f.read()
    if how == "truncated":
        data = data[:len(data) // 2]
    elif how == "random bytes":
        data = random.Random(len(data)).randbytes(max(len(data), 64))
    elif how == "empty":
        data = b""
    else:
        with open(other, "rb") as f:
            data = f.read()
    with open(path, "wb") as f:
        f.write(data)


# The cases' names are known before any file exists: cases() only joins paths.
CASE_NAMES = [case for case, *_ in cases("<root>", "<model folder>", "<m>")]
assert len(set(CASE_NAMES)) == len(CASE_NAMES), "each case has its own name: its test id"
DAMAGE_CASES = [(case, how) for case in CASE_NAMES for how in DAMAGES]
ROWS = {}  # (case, damage) -> the message, for RECONTROL_DAMAGE_TABLE


@pytest.fixture(scope="module", autouse=True)
def damage_table():
    """After the module: the Markdown table of every case and its message, where RECONTROL_DAMAGE_TABLE names a file
    and every case passed (a partial table would drop rows from the README silently)."""
    ROWS.clear()
    yield
    order = [*DAMAGE_CASES, ("value model (stage 4)", "of another LLM")]
    if os.environ.get("RECONTROL_DAMAGE_TABLE") and all(key in ROWS for key in order):
        with open(os.environ["RECONTROL_DAMAGE_TABLE"], "w") as f:
            f.write("| file (read by) | damage | what the tool prints (exit status 2) |\n|---|---|---|\n")
            f.writelines(f"| {case} | {how} | `{ROWS[case, how]}` |\n" for case, how in order)


@pytest.mark.parametrize("case,how", DAMAGE_CASES, ids=[f"{case}, {how}" for case, how in DAMAGE_CASES])
def test_damaged_or_foreign_file_is_one_line_exit_2_and_writes_nothing(good, tiny_llama_dir, tmp_path, capfd, case,
                                                                        how):
    root, m = good
    path, command, other = {name: rest for name, *rest in cases(root, tiny_llama_dir, m)}[case]
    work = str(tmp_path / "run")
    shutil.copytree(root, work)
    here = dict(zip(["path", "command", "other"], [p.replace(root, work) if isinstance(p, str) else
                                                   [c.replace(root, work) for c in p]
                                                   for p in (path, command, other)]))
    damage(here["path"], how, here["other"])
    before = snapshot(work)
    code, stdout, stderr = run_in_process(here["command"], capfd)
    lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.strip() and "it/s]" not in line
             and not line.startswith(("Loading weights", "note:"))]
    label = f"{case}, {how}"
    assert code == 2, f"{label}: exit {code}\n{stderr[-3000:]}"
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{label}: {stderr[-3000:]}"
    assert "Traceback" not in stdout + stderr, label
    assert os.path.basename(here["path"]) in lines[0], f"{label}: the message names the file: {lines[0]}"
    assert snapshot(work) == before, f"{label}: a refused command writes nothing"
    ROWS[case, how] = lines[0].replace(work, "…").replace(tiny_llama_dir, "<model folder>")


def test_value_model_made_for_another_llm_is_one_line_exit_2_and_writes_nothing(good, tiny_llama_dir, tmp_path,
                                                                                capfd):
    root, m = good
    work = str(tmp_path / "other-llm")
    shutil.copytree(root, work)
    vm = cases(work, tiny_llama_dir, m)[0]
    torch.manual_seed(0)
    save_value_model(ValueModel(32, 32, 2), vm[1].removesuffix(".safetensors"), llm="another/llm")
    before = snapshot(work)
    code, _, stderr = run_in_process(vm[2], capfd)
    assert code == 2 and "trained on another/llm's states" in stderr and snapshot(work) == before
    ROWS["value model (stage 4)", "of another LLM"] = (stderr.strip().splitlines()[-1].replace(work, "…")
                                                        .replace(tiny_llama_dir, "<model folder>"))
