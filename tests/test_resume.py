"""Nothing lost: a stage killed with kill -9 resumes to the same bytes; 2 processes under `accelerate launch` write the
same files as 1; outputs of a run with other settings are refused without --overwrite."""
import glob
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import get_activations_only
import inference_intervention
from conftest import QUESTIONS, ROOT, write_jsonl
from utils.errors import UsageError
from utils.value_model import ValueModel, save_value_model

D = "toy"
ENV = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")


def script(name, *args):
    return [sys.executable, os.path.join(ROOT, name), *args]


def outputs(root):
    """Every file a stage wrote, as bytes; the .meta.json run descriptions (times, commands) are left out."""
    files = {}
    for path in glob.glob(os.path.join(root, "**", "*"), recursive=True):
        if os.path.isfile(path) and not path.endswith(".meta.json"):
            with open(path, "rb") as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


def many_questions(folder, n_train, n_test):
    for split, n in (("train", n_train), ("test", n_test)):
        write_jsonl(os.path.join(folder, f"q_{split}.jsonl"),
                    [{"question": f"{QUESTIONS[i % len(QUESTIONS)]} (variant {i})"} for i in range(n)])
    return os.path.join(folder, "q_{split}.jsonl")


def llm(model_dir, out, qfile, *extra):
    return ["--model_name", model_dir, "--dataset_name", D, "--data_file", qfile, "--device", "cpu",
            "--num_threads", "1", "--output_dir", out, *extra]


def value_model_for(model_dir, out, lr="0.001"):
    stem = os.path.join(out, "trained_model", f"value_model_{os.path.basename(model_dir)}_{D}_{lr}")
    torch.manual_seed(0)
    save_value_model(ValueModel(32, 32, 2), stem, llm=model_dir)


def kill_part_way(command, parts, min_done):
    """Start `command`, kill -9 it once `min_done` batches are saved under `parts`; returns how many were."""
    proc = subprocess.Popen(command, env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    done = []
    while time.time() < deadline:
        done = [p for p in glob.glob(os.path.join(parts, "*.json")) if not p.endswith("run.json")]
        if len(done) >= min_done:
            break
        assert proc.poll() is None, "the stage ended before it could be killed: " + proc.stderr.read().decode()
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return len(done)


def resume(command):
    result = subprocess.run(command, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stderr


@pytest.mark.parametrize("stage", ["get_activations_only.py", "inference_intervention.py"])
def test_kill_9_then_the_same_command_resumes_to_identical_files(tmp_path, tiny_llama_dir, stage):
    qfile = many_questions(str(tmp_path), 40, 40)
    extra = ["--batch_size", "1", "--max_new_tokens", "24"]
    if stage == "get_activations_only.py":
        extra += ["--splits", "train", "--num_samples", "2"]  # sampled: the resumed batches must draw the same
        response = os.path.join("features", f"{os.path.basename(tiny_llama_dir)}_{D}_response_train.json")
    else:
        extra += ["--use_intervention", "True", "--value_lr", "0.001", "--lr", "0.5", "--epochs", "5"]
        response = os.path.join("response", f"{os.path.basename(tiny_llama_dir)}_{D}_0.001_5_0.5.json")
    runs = {}
    for name in ("whole", "killed"):
        out = str(tmp_path / name)
        if stage == "inference_intervention.py":
            value_model_for(tiny_llama_dir, out)
        runs[name] = (out, script(stage, *llm(tiny_llama_dir, out, qfile, *extra)))
    resume(runs["whole"][1])
    out, command = runs["killed"]
    done = kill_part_way(command, os.path.join(out, response + ".parts"), min_done=3)
    assert not os.path.exists(os.path.join(out, response)), "nothing is written under the final name before the end"
    stderr = resume(command)
    resumed_from = int(stderr.split("resuming ")[1].split(": ")[1].split(" of 40")[0])
    assert resumed_from in (done, done + 1), "the bar starts from the batches already done"
    assert not os.path.exists(os.path.join(out, response + ".parts")), "the batches are removed once merged"
    assert outputs(out) == outputs(runs["whole"][0])


def test_two_processes_write_the_same_files_as_one(tmp_path, tiny_llama_dir):
    """Stages 1, 2, 4 and 5 under `accelerate launch --num_processes 2` (CPU) against a plain run."""
    qfile = many_questions(str(tmp_path), 7, 5)
    m = os.path.basename(tiny_llama_dir)
    re_control = f"{m}_{D}_0.001_3_0.5"
    for name, launcher in (("one", []), ("two", ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                                                 "2", "--num_machines", "1", "--mixed_precision", "no",
                                                 "--dynamo_backend", "no", "--main_process_port", "0"])):
        out = str(tmp_path / name)
        value_model_for(tiny_llama_dir, out)
        commands = [
            ["get_activations_only.py", *llm(tiny_llama_dir, out, qfile, "--batch_size", "2", "--max_new_tokens", "6",
                                             "--num_samples", "2")],
            ["reward_label.py", "--model_name", tiny_llama_dir, "--dataset_name", D, "--mode", "train",
             "--batch_size", "3", "--output_dir", out],
            ["inference_intervention.py", *llm(tiny_llama_dir, out, qfile, "--batch_size", "2", "--max_new_tokens", "6",
                                               "--use_intervention", "True", "--value_lr", "0.001", "--lr", "0.5",
                                               "--epochs", "3")],
            ["measure_reward.py", "--out_file", re_control, "--batch_size", "2", "--output_dir", out],
        ]
        for name_and_args in commands:
            command = [sys.executable, *launcher, os.path.join(ROOT, name_and_args[0]), *name_and_args[1:]]
            result = subprocess.run(command, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
            assert result.returncode == 0, result.stderr[-3000:]
            if launcher and name_and_args[0] == "get_activations_only.py":
                assert "[process 2/2]" in result.stderr, "two processes shared the batches"
    one, two = outputs(str(tmp_path / "one")), outputs(str(tmp_path / "two"))
    assert sorted(one) == sorted(two) and len(one) >= 9
    for path in one:
        assert one[path] == two[path], path


def test_outputs_of_other_settings_are_refused_without_overwrite(tmp_path, tiny_llama_dir):
    qfile = many_questions(str(tmp_path), 3, 2)
    out = str(tmp_path / "out")
    base = llm(tiny_llama_dir, out, qfile, "--batch_size", "2", "--max_new_tokens", "3")
    get_activations_only.main(base)
    get_activations_only.main(base)  # the same settings: allowed
    with pytest.raises(UsageError, match=r"exists and a run with other settings made it \(--max_new_tokens 3 there, "
                                         r"4 now\); pass --overwrite"):
        get_activations_only.main(base[:-1] + ["4"])
    get_activations_only.main(base[:-1] + ["4", "--overwrite", "True"])
    inference_intervention.main(base)
    response = os.path.join(out, "response", f"{os.path.basename(tiny_llama_dir)}_{D}_base.json")
    os.remove(response.replace(".json", ".meta.json"))
    with pytest.raises(UsageError, match="nothing records the settings that made it"):
        inference_intervention.main(base)


def test_unfinished_batches_of_other_settings_are_refused(tmp_path, tiny_llama_dir):
    qfile = many_questions(str(tmp_path), 3, 4)
    out = str(tmp_path / "out")
    response = os.path.join(out, "response", f"{os.path.basename(tiny_llama_dir)}_{D}_base.json")
    inference_intervention.main(llm(tiny_llama_dir, out, qfile, "--batch_size", "1", "--max_new_tokens", "3"))
    shutil.move(response, response + ".bak")  # a finished run's batches, as if the merge had not happened yet
    os.makedirs(response + ".parts")
    with open(os.path.join(response + ".parts", "run.json"), "w") as f:
        f.write('{"settings": {"max_new_tokens": 99}, "num_batches": 4}')
    with pytest.raises(UsageError, match="holds an unfinished run with other settings; run that command again"):
        inference_intervention.main(llm(tiny_llama_dir, out, qfile, "--batch_size", "1", "--max_new_tokens", "3"))
    inference_intervention.main(llm(tiny_llama_dir, out, qfile, "--batch_size", "1", "--max_new_tokens", "3",
                                    "--overwrite", "True"))
    with open(response, "rb") as a, open(response + ".bak", "rb") as b:
        assert a.read() == b.read()


def test_unfinished_batches_recorded_with_a_record_only_name_resume(tmp_path):
    """A stage-5 marker written when --dataset_name was still a setting: the done batch is kept, not redone."""
    from utils.io import Settings
    from utils.runs import BatchRun
    output = str(tmp_path / "final_reward" / "run.json")
    os.makedirs(output + ".parts")
    with open(os.path.join(output + ".parts", "run.json"), "w") as f:
        f.write('{"settings": {"reward_model": "vader", "dataset_name": "demo_polar"}, "num_batches": 2}')
    with open(os.path.join(output + ".parts", "000000.json"), "w") as f:
        f.write("[0.5]")
    settings = Settings({"reward_model": "vader"}, record_only=("model_name", "dataset_name"))
    assert BatchRun(output, settings, 2).todo == [1]
    with pytest.raises(UsageError, match="holds an unfinished run with other settings"):
        BatchRun(output, Settings({"reward_model": "textblob"}, ("model_name", "dataset_name")), 2)


class Crash(BaseException):
    pass


@pytest.mark.parametrize("stage", ["reward_label", "measure_reward"])
def test_ctrl_c_then_the_same_command_resumes_without_rescoring(tmp_path, monkeypatch, stage):
    """Stages 2 and 5: a crash in the third batch (an exception outside Exception, like Ctrl-C's), then the same
    command scores only the batches not yet saved."""
    import json

    import measure_reward
    import reward_label
    from utils.rewards import VaderReward
    records = [{"prompt": f"User: q{i}\nAssistant:", "response": "", "results": text,
                "conversation": f"Human: q{i}\n\nAssistant:"}
               for i, text in enumerate(["great, thank you!", "this is awful", "fine", "I love it", "meh", "sad news",
                                         "wonderful day", "terrible", "okay then", "happy to help"])]
    module, relative = {"reward_label": (reward_label, os.path.join("features", f"m_{D}_labels_train.json")),
                        "measure_reward": (measure_reward, os.path.join("final_reward", "red.json"))}[stage]
    argv = {"reward_label": ["--model_name", "m", "--dataset_name", D, "--mode", "train", "--batch_size", "2"],
            "measure_reward": ["--out_file", "red", "--batch_size", "2"]}[stage]
    for name in ("whole", "interrupted"):
        source = os.path.join(str(tmp_path), name, "features" if stage == "reward_label" else "response",
                              f"m_{D}_response_train.json" if stage == "reward_label" else "red.json")
        os.makedirs(os.path.dirname(source))
        with open(source, "w") as f:
            json.dump(records, f)
    module.main(argv + ["--output_dir", str(tmp_path / "whole")])
    original, calls, resumed = VaderReward.score_batch, [], False

    def interrupted(self, texts):
        calls.append(texts)
        if len(calls) == 3 and not resumed:
            raise Crash
        return original(self, texts)
    monkeypatch.setattr(VaderReward, "score_batch", interrupted)
    out = str(tmp_path / "interrupted")
    with pytest.raises(Crash):
        module.main(argv + ["--output_dir", out])
    assert not os.path.exists(os.path.join(out, relative))
    calls.clear()
    resumed = True
    module.main(argv + ["--output_dir", out])
    assert len(calls) == 5 - 2, "only the batches not saved are scored again"
    with open(os.path.join(out, relative), "rb") as a, open(os.path.join(str(tmp_path / "whole"), relative), "rb") as b:
        assert a.read() == b.read()
