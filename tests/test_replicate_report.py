"""scripts/replicate_report.py on two hand-made draw folders: per-draw paired differences, the target test and the
pooled figure, against numbers computed by hand."""
import json
import math
import os

import pytest

import replicate_report

M = "smollm2_135M_demo"


def write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)


def draw(root, seed, base, re_control, static, re_div=0.8):
    d = os.path.join(root, f"seed{seed}")
    runs = {f"{M}_base": (base, "base", 0.8), f"{M}_0.001_20_2.0": (re_control, "RE-Control", re_div),
            f"{M}_static_re_4.0": (static, "static_re", 0.8)}
    for run, (rewards, method, div) in runs.items():
        write(os.path.join(d, "final_reward", f"{run}.json"),
              {"run": run, "rewards": rewards, "average_reward": sum(rewards) / len(rewards), "count": len(rewards)})
        write(os.path.join(d, "evaluations", f"{run}.json"), {"diversity": div, "coherence": 0.85, "rep-4": 3.0})
        write(os.path.join(d, "response", f"{run}.meta.json"), {"method": method, "split": "test"})
    # a tuning-split run of the sweep must not be mistaken for the test run
    write(os.path.join(d, "response", f"{M}_tune_0.001_20_2.0.meta.json"), {"method": "RE-Control", "split": "tune"})
    for sweep, chosen in (("sweep", {"step_size": 2.0, "num_updates": 20}), ("sweep_static_re", {"strength": 4.0})):
        write(os.path.join(d, "results", f"{M}_{sweep}.json"), {"chosen": chosen, "rule": "paper"})


def test_per_draw_and_pooled_effects_by_hand(tmp_path, capsys):
    root = str(tmp_path / "rep")
    base = [0.0, 0.0, 0.0, 0.0]
    draw(root, 0, base, [1.0, 1.0, 1.0, 0.6], [0.1, -0.1, 0.1, -0.1])
    draw(root, 1, base, [0.5, 0.7, 0.9, 1.1], [0.2, 0.0, 0.2, 0.0], re_div=0.7)
    out = str(tmp_path / "report")
    replicate_report.main(["--output_dir", root, "--out", out])
    report = json.load(open(out + ".json"))
    d0, d1 = report["draws"][0]["RE-Control"], report["draws"][1]["RE-Control"]
    # draw 0: differences 1, 1, 1, 0.6: mean 0.9, squared deviations 0.12, sd = sqrt(0.12 / 3) = 0.2, se = sd / 2
    assert d0["difference"] == pytest.approx(0.9) and d0["se"] == pytest.approx(0.1)
    assert d0["meets_target"] and d0["setting"] == {"step_size": 2.0, "num_updates": 20}
    # draw 1: diversity 0.7 / 0.8 = 0.875 < 0.9: the target is missed however large the effect
    assert d1["diversity_ratio"] == pytest.approx(0.875) and not d1["meets_target"]
    # pooled: per-prompt means over draws 0.75, 0.85, 0.95, 0.85 -> mean 0.85, sd sqrt(0.02 / 3)
    pooled = report["pooled"]["RE-Control"]
    assert pooled["difference"] == pytest.approx(0.85) and pooled["se"] == pytest.approx(math.sqrt(0.02 / 3) / 2)
    assert pooled["draws_meeting_target"] == 1
    assert report["pooled"]["Static RE"]["difference"] == pytest.approx(0.05)
    table = open(out + ".md").read()
    assert "| seed0 | RE-Control | alpha 2, n 20 (paper rule)" in table and "1 of 2" in table
