"""scripts/same_outputs.py: what a refactor's byte-identity check compares, and that a planted change is found."""
import json
import os
import shutil

import torch
from safetensors.torch import save_file

import same_outputs


def write_run(root, reward=0.5, wall_time=1.0):
    os.makedirs(os.path.join(root, "final_reward"))
    os.makedirs(os.path.join(root, "trained_model"))
    os.makedirs(os.path.join(root, "response"))
    with open(os.path.join(root, "final_reward", "m_d_base.json"), "w") as f:
        json.dump({"run": "m_d_base", "rewards": [reward, 0.1]}, f)
    with open(os.path.join(root, "response", "m_d_base.json"), "w") as f:
        json.dump([{"prompt": "p", "results": "r"}], f)
    path = os.path.join(root, "trained_model", "value_model_m_d_0.001.safetensors")
    save_file({"net.0.weight": torch.ones(2, 2)}, path, metadata={"config": json.dumps({"seconds": wall_time})})


def test_identical_runs_pass_though_the_value_models_metadata_differs(tmp_path, capsys):
    write_run(str(tmp_path / "a"), wall_time=1.0)
    write_run(str(tmp_path / "b"), wall_time=2.0)
    assert same_outputs.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "3 identical, 0 different or missing" in capsys.readouterr().out


def test_a_changed_reward_or_a_missing_file_fails(tmp_path, capsys):
    write_run(str(tmp_path / "a"))
    write_run(str(tmp_path / "b"), reward=0.6)
    assert same_outputs.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    assert "DIFFERENT  final_reward/m_d_base.json" in capsys.readouterr().out
    write_run(str(tmp_path / "c"))
    shutil.rmtree(tmp_path / "c" / "response")
    assert same_outputs.main([str(tmp_path / "a"), str(tmp_path / "c")]) == 1
    assert "missing in after  response/m_d_base.json" in capsys.readouterr().out
