"""scripts/replicate_report.py on hand-made per-prompt files of three draws: the per-draw conditional figures, the
over-draws mean with its t interval, the untouched-prompt subset, the held-out scorer and the provenance column,
against numbers computed by hand."""
import json
import math
import os

import pytest

import replicate_report
from utils.errors import UsageError
from utils.results import over_draws, two_stage_bootstrap

IDS = ["test-0001", "test-0101", "test-0102", "test-0250"]
COLUMNS = ["id", "vader", "textblob", "length", "rep-2", "rep-3", "rep-4", "diversity", "coherence"]


def write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)


def run_file(folder, run, method, vader, textblob, settings, sha="a" * 64, diversity=0.8, split="test"):
    rows = [[i, v, t, 40, 5.0, 3.0, 2.0, diversity, 0.85] for i, v, t in zip(IDS, vader, textblob)]
    write(os.path.join(folder, f"{run}.json"),
          {"run": run, "method": method, "label": method, "split": split, "reward_model": "vader",
           "heldout_reward_model": "textblob", "value_model_file": None if method == "base" else "vm",
           "value_model_sha256": None if method == "base" else sha, "value_model_tune_loss": 5.9,
           "settings": settings, "columns": COLUMNS, "rows": rows})


def draw(root, seed, re_control, static, sha="a" * 64, swept_for="a" * 64):
    folder = os.path.join(root, f"seed{seed}")
    zero = [0.0] * 4
    run_file(folder, "m_demo_base", "base", zero, zero, {"split": "test"})
    run_file(folder, "m_demo_0.001_10_3.0", "re_control", re_control, [x / 2 for x in re_control],
             {"option_step_size": 3.0, "option_num_updates": 10, "settings_from": "results/m_demo_sweep.json"}, sha)
    run_file(folder, "m_demo_static_re_4.0", "static_re", static, static,
             {"option_strength": 4.0, "settings_from": "results/m_demo_sweep_static_re.json"}, sha)
    # a tuning-split cell of the sweep is not a test run
    run_file(folder, "m_demo_tune_0.001_10_3.0", "re_control", [9.0] * 4, [9.0] * 4, {}, split="tune")
    for name in ("m_demo_sweep", "m_demo_sweep_static_re"):
        write(os.path.join(folder, "sweeps", f"{name}.json"), {"rule": "paper", "value_model_sha256": swept_for})


def test_over_draws_by_hand():
    # effects 0.1, 0.2, 0.3: mean 0.2, sd 0.1, se 0.1 / sqrt(3); t(2) 97.5 % = 4.302653
    stats = over_draws([0.1, 0.2, 0.3])
    se = 0.1 / math.sqrt(3)
    assert stats["mean"] == pytest.approx(0.2) and stats["se"] == pytest.approx(se)
    assert stats["low"] == pytest.approx(0.2 - 4.302653 * se, abs=1e-6)
    assert stats["high"] == pytest.approx(0.2 + 4.302653 * se, abs=1e-6)
    # t = 0.2 / se = 3.4641 on 2 df: two-sided p = 0.07418
    assert stats["p"] == pytest.approx(0.07418, abs=1e-4)


def test_two_stage_bootstrap_is_reproducible_and_brackets_the_mean():
    diffs = [[0.1, 0.3, 0.2, 0.0], [0.5, 0.4, 0.6, 0.3], [0.2, 0.2, 0.1, 0.3]]
    low, high = two_stage_bootstrap(diffs, repeats=2000, seed=0)
    assert (low, high) == two_stage_bootstrap(diffs, repeats=2000, seed=0)
    assert low < 0.2667 < high
    # with every draw the same constant, there is nothing to resample
    assert two_stage_bootstrap([[0.5] * 4] * 3, repeats=200) == pytest.approx((0.5, 0.5))


def test_report_from_per_prompt_files(tmp_path, capsys):
    root = str(tmp_path / "per_prompt")
    draw(root, 0, [1.0, 1.0, 1.0, 0.6], [0.1, -0.1, 0.1, -0.1])
    draw(root, 1, [0.5, 0.7, 0.9, 1.1], [0.2, 0.0, 0.2, 0.0])
    draw(root, 2, [0.0, 0.2, 0.2, 0.2], [0.3, 0.3, 0.3, 0.3], sha="b" * 64)  # swept for another value model
    out = str(tmp_path / "report")
    replicate_report.main(["--per_prompt", root, "--out", out])
    report = json.load(open(out + ".json"))
    d0 = report["draws"][0]["comparisons"]["re_control-base"]
    # draw 0: differences 1, 1, 1, 0.6 -> mean 0.9, se 0.1; test-0101..0250 alone: 1, 1, 0.6 -> mean 0.8667
    assert d0["all"]["difference"] == pytest.approx(0.9) and d0["all"]["se"] == pytest.approx(0.1)
    assert d0["untouched"]["difference"] == pytest.approx(2.6 / 3)
    assert d0["heldout"]["difference"] == pytest.approx(0.45)  # textblob = vader / 2 here
    # RE-Control - Static RE in draw 0: 0.9, 1.1, 0.9, 0.7 -> 0.9
    assert report["draws"][0]["comparisons"]["re_control-static_re"]["all"]["difference"] == pytest.approx(0.9)
    # over draws: effects 0.9, 0.8, 0.15
    pooled = report["over_draws"]["re_control-base"]["all"]
    effects = [0.9, 0.8, 0.15]
    assert pooled["mean"] == pytest.approx(sum(effects) / 3)
    assert pooled["se"] == pytest.approx(over_draws(effects)["se"])
    assert pooled["draws_above_zero"] == 3
    assert report["draws"][2]["methods"]["re_control"]["chosen_for_this_value_model"] is False
    assert report["draws"][0]["methods"]["re_control"]["chosen_for_this_value_model"] is True
    table = open(out + ".md").read()
    assert "| seed0 | RE-Control − Base | RE-Control alpha 3, n 10 | +0.9000 ± 0.1000 (9.0 SE)" in table
    assert "| seed2 | bbbbbbbbbbbb | 5.9000 | no (paper rule) | no (paper rule) |" in table


def test_a_task_whose_test_prompts_are_all_untouched_reports_them_once(tmp_path):
    root = str(tmp_path / "per_prompt")
    draw(root, 0, [1.0, 1.0, 1.0, 0.6], [0.1, -0.1, 0.1, -0.1])
    draw(root, 1, [0.5, 0.7, 0.9, 1.1], [0.2, 0.0, 0.2, 0.0])
    out = str(tmp_path / "report")
    replicate_report.main(["--per_prompt", root, "--out", out, "--first_untouched", "1"])
    report = json.load(open(out + ".json"))
    assert report["draws"][0]["num_untouched"] == 4
    assert "untouched" not in report["draws"][0]["comparisons"]["re_control-base"]
    assert set(report["over_draws"]["re_control-base"]) == {"all", "heldout"}
    table = open(out + ".md").read()
    assert "vader, test-0001" not in table and "| all 4 (vader) |" in table
    assert "| seed0 | RE-Control − Base | RE-Control alpha 3, n 10 | +0.9000 ± 0.1000 (9.0 SE) | +0.4500" in table


def test_two_test_runs_of_one_method_are_refused(tmp_path):
    root = str(tmp_path / "per_prompt")
    draw(root, 0, [1.0] * 4, [0.0] * 4)
    run_file(os.path.join(root, "seed0"), "m_demo_0.002_10_3.0", "re_control", [0.0] * 4, [0.0] * 4, {})
    with pytest.raises(UsageError, match="two re_control runs"):
        replicate_report.main(["--per_prompt", root, "--out", str(tmp_path / "r")])


def test_each_re_control_option_gets_its_own_rows(tmp_path):
    """Runs of RE-Control with issue 20's options (a refit or margin-loss value model by its file name, a gate by its
    settings) are reported as their own methods against base, RE-Control, Static RE and Prompting, where every draw
    has them; one only some draws have is left out."""
    root = str(tmp_path / "per_prompt")
    for seed in range(3):
        draw(root, seed, [0.5] * 4, [0.0] * 4)
        folder = os.path.join(root, f"seed{seed}")
        options = {"m_demo_0.001_pm1_10_3.0": ("trained_model/value_model_m_demo_0.001_pm1", {}, 0.2),
                   "m_demo_0.001_s1_r2_ra3_rn10_10_3.0": ("trained_model/value_model_m_demo_0.001_s1_r2_ra3_rn10", {},
                                                          0.3),
                   "m_demo_0.001_10_3.0_gate_entropy2": ("trained_model/value_model_m_demo_0.001",
                                                         {"option_gate": "entropy", "option_gate_threshold": 2.0},
                                                         0.1 * (seed + 1))}
        if seed == 0:
            options["m_demo_0.001_10_3.0_gate_value0"] = ("vm", {"option_gate": "value", "option_gate_threshold": 0.0},
                                                          0.9)
        for run, (file, settings, vader) in options.items():
            run_file(folder, run, "re_control", [vader] * 4, [vader] * 4,
                     {"option_step_size": 3.0, "option_num_updates": 10, **settings})
            path = os.path.join(folder, f"{run}.json")
            record = json.load(open(path))
            write(path, dict(record, value_model_file=file))
    out = str(tmp_path / "report")
    replicate_report.main(["--per_prompt", root, "--out", out])
    report = json.load(open(out + ".json"))
    pooled = report["over_draws"]
    assert pooled["re_control_margin-re_control"]["all"]["mean"] == pytest.approx(0.2 - 0.5)
    assert pooled["re_control_refit-base"]["all"]["mean"] == pytest.approx(0.3)
    assert pooled["re_control_entropy_gate-static_re"]["all"]["mean"] == pytest.approx(0.2)  # 0.1, 0.2, 0.3
    assert not any(key.startswith("re_control_value_gate") for key in pooled), "only draw 0 has it"
    table = open(out + ".md").read()
    for name in ("RE-Control (margin loss) − RE-Control", "RE-Control (refit) − Base",
                 "RE-Control (entropy gate) − Static RE"):
        assert f"| {name} |" in table
