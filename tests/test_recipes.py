"""recipes/: each paper setting prints the exact stage commands it runs (dry run), with the paper's flags."""
import importlib.util
import os
import shlex

import pytest

from conftest import ROOT

RECIPES = {"vicuna_7B_hh_rlhf": ("argsearch/llama-7b-rm-float32", "3", "0.0001", "0.5", "30"),
           "falcon_7B_hh_rlhf": ("argsearch/llama-7b-rm-float32", "2", "0.0001", "0.2", "200"),
           "vicuna_7B_shp": ("openbmb/UltraRM-13b", "2", "0.0001", "1.0", "50"),
           "llama3_8B_shp": ("openbmb/UltraRM-13b", "2", "0.001", "1.0", "30")}


def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "recipes", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_dry_run_prints_the_paper_settings_stage_commands(name, capsys):
    from utils.recipes import main
    reward_model, layers, value_lr, alpha, n = RECIPES[name]
    recipe = load(name)
    main(recipe.SETTING, recipe.__doc__, ["--dry_run", "True", "--python", "python", "--output_dir", "out"])
    lines = [line.split(". ", 1)[1] for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    commands = [shlex.split(line) for line in lines]
    scripts = [os.path.basename(c[1]) for c in commands]
    assert scripts[:8] == ["get_activations_only.py", "reward_label.py", "reward_label.py", "train_value_model.py",
                           "inference_intervention.py", "inference_intervention.py", "inference_intervention.py",
                           "measure_reward.py"] and scripts[-1] == "make_table.py"
    assert all(os.path.exists(c[1]) for c in commands), "absolute paths of the repository's scripts"
    flags = [dict(zip(c[2::2], c[3::2])) for c in commands]
    assert flags[1]["--reward_model"] == reward_model and flags[1]["--mode"] == "train"
    assert flags[3]["--num_layers"] == layers and flags[3]["--lr"] == value_lr and flags[3]["--hidden_dim"] == "4096"
    steer = flags[5]
    assert (steer["--use_intervention"], steer["--lr"], steer["--epochs"], steer["--value_lr"]) == \
        ("True", alpha, n, value_lr)
    assert flags[6]["--prompting"] == "True"
    # stage 5 scores the paper's file names: the value model keeps its original name (the paper's shape and epochs)
    assert flags[8]["--out_file"] == f"{name}_{value_lr}_{n}_{alpha}"
    import train_value_model
    from utils.training import value_model_variant
    stage3 = vars(train_value_model.parse_args(commands[3][2:]))
    assert value_model_variant(stage3, stage3["model_name"], stage3["dataset_name"]) == ""
    assert all(f["--output_dir"] == "out" for f in flags)


def test_demo_recipe_dry_run_prints_its_stage_commands_and_runs_nothing(tmp_path):
    import subprocess
    out = subprocess.run(["bash", os.path.join(ROOT, "recipes", "demo.sh"), "--dry_run"], capture_output=True,
                         text=True, timeout=60, env=dict(os.environ, OUT=str(tmp_path / "demo")))
    assert out.returncode == 0, out.stderr
    commands = [shlex.split(line) for line in out.stdout.splitlines()]
    scripts = [c[1] for c in commands]
    assert scripts == ["get_activations_only.py", "get_activations_only.py", "reward_label.py", "reward_label.py",
                       "train_value_model.py", "inference_intervention.py", "inference_intervention.py",
                       "measure_reward.py", "measure_reward.py", "metrics.py", "metrics.py", "make_table.py",
                       "report_html.py"]
    assert "--settings_from" in commands[6] and "--td_lambda" in commands[4]
    assert not os.path.exists(tmp_path / "demo"), "a dry run writes nothing"


def test_demo_names_its_runs_after_the_value_model_stage_3_writes():
    """scripts/demo_settings.sh's VALUE_TAG is what stage 3 and stage 4 call the demo's value model."""
    import subprocess

    import train_value_model
    from utils.training import value_model_variant
    out = subprocess.run(["bash", "-c", "source scripts/demo_settings.sh; echo $VALUE_LR; echo $VALUE_FLAGS; "
                          "echo $VALUE_TAG"], cwd=ROOT, capture_output=True, text=True, check=True)
    value_lr, flags, value_tag = out.stdout.splitlines()
    args = vars(train_value_model.parse_args(["--lr", value_lr, *flags.split()]))
    assert value_tag == value_lr + value_model_variant(args, "smollm2_135M", "demo") == "0.001_td1_vf0.1_es"
