"""recipes/: each paper setting prints the exact stage commands it runs (dry run), with the paper's flags."""
import importlib.util
import os
import shlex
import shutil

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
    from utils.names import value_model_variant
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
    from utils.names import value_model_variant
    out = subprocess.run(["bash", "-c", "source scripts/demo_settings.sh; echo $VALUE_LR; echo $VALUE_FLAGS; "
                          "echo $VALUE_TAG"], cwd=ROOT, capture_output=True, text=True, check=True)
    value_lr, flags, value_tag = out.stdout.splitlines()
    args = vars(train_value_model.parse_args(["--lr", value_lr, *flags.split()]))
    assert value_tag == value_lr + value_model_variant(args, "smollm2_135M", "demo") == "0.001_td1_vf0.1_es"


def test_demo_ood_dry_run_steers_the_ood_prompts_with_the_demos_value_model(tmp_path):
    """scripts/demo_ood.sh: base, RE-Control and RE-Control + Prompting on dataset/demo_ood.jsonl with the demo's value
    model and alpha, n, scored by stages 5-6, named as stage 4 names them; no judge unless one is configured."""
    import subprocess

    import inference_intervention
    from utils.stages.stage4_inference import plan_run
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "JUDGE_BASE_URL")}
    out = subprocess.run(["bash", os.path.join(ROOT, "scripts", "demo_ood.sh"), "--dry_run"], capture_output=True,
                         text=True, timeout=60, env=dict(env, OUT=str(tmp_path / "ood"), DEMO="d"))
    assert out.returncode == 0, out.stderr
    commands = [shlex.split(line) for line in out.stdout.splitlines()]
    assert [c[1] for c in commands] == ["inference_intervention.py"] * 3 + ["measure_reward.py"] * 3 + \
        ["metrics.py"] * 3 + ["make_table.py"]
    flags = [dict(zip(c[2::2], c[3::2])) for c in commands]
    assert all(f.get("--dataset_name", "demo_ood") == "demo_ood" and f["--output_dir"] == str(tmp_path / "ood")
               for f in flags)
    value_model = "d/trained_model/value_model_smollm2_135M_demo_0.001_td1_vf0.1_es.safetensors"
    assert [f["--use_intervention"] for f in flags[:3]] == ["False", "True", "True"]
    assert flags[1]["--value_model"] == flags[2]["--value_model"] == value_model
    assert flags[2]["--prompting"] == "True" and all(f["--split"] == "ood" for f in flags[:3])
    assert flags[1]["--settings_from"] == "results/smollm2_135M_demo_sweep.json"
    # the runs stages 5-6 score are the ones stage 4 writes (alpha 3, n 10 as the committed sweep chose)
    names = []
    for c in commands[:3]:
        parsed = inference_intervention.parse_args(c[2:])
        names.append(plan_run(parsed.config, parsed.options).name)
    assert [f["--out_file"] for f in flags[3:6]] == names
    assert [f["--run_name"] for f in flags[6:9]] == names
    assert flags[4]["--baseline"] == names[0] == "smollm2_135M_demo_ood_base"
    assert not os.path.exists(tmp_path / "ood"), "a dry run writes nothing"
    judged = subprocess.run(["bash", os.path.join(ROOT, "scripts", "demo_ood.sh"), "--dry_run"], capture_output=True,
                            text=True, timeout=60, env=dict(env, OUT=str(tmp_path / "ood"), DEMO="d",
                                                            JUDGE_BASE_URL="http://127.0.0.1:1/v1"))
    assert judged.returncode == 0, judged.stderr
    judges = [shlex.split(line) for line in judged.stdout.splitlines() if "gpt4_eval.py" in line]
    assert [dict(zip(c[2::2], c[3::2]))["--run_name_red"] for c in judges] == names[1:]
    assert all(dict(zip(c[2::2], c[3::2]))["--run_name_blue"] == names[0] for c in judges)


def test_demo_ood_reads_the_demos_own_sweep_when_demo_sh_chose_alpha_and_n(tmp_path):
    """On a host that trains other demo weights, demo.sh sweeps into $DEMO/results; demo_ood.sh then steers with
    that choice (made for the value model it uses), not the committed one (made for another)."""
    import subprocess
    demo = tmp_path / "demo"
    os.makedirs(demo / "results")
    own = str(demo / "results" / "smollm2_135M_demo_sweep.json")
    shutil.copy(os.path.join(ROOT, "results", "smollm2_135M_demo_sweep.json"), own)
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "JUDGE_BASE_URL", "SETTINGS")}
    out = subprocess.run(["bash", os.path.join(ROOT, "scripts", "demo_ood.sh"), "--dry_run"], capture_output=True,
                         text=True, timeout=60, env=dict(env, OUT=str(tmp_path / "ood"), DEMO=str(demo)))
    assert out.returncode == 0, out.stderr
    steered = [shlex.split(line) for line in out.stdout.splitlines() if "--value_model" in line]
    assert len(steered) == 2 and all(dict(zip(c[2::2], c[3::2]))["--settings_from"] == own for c in steered)


@pytest.mark.parametrize("name,trained", [("vicuna_7B_harmfulqa", "vicuna_7B_hh_rlhf"),
                                          ("falcon_7B_harmfulqa", "falcon_7B_hh_rlhf")])
def test_harmfulqa_recipe_applies_the_hh_rlhf_value_model_and_judges_against_base(name, trained, capsys):
    """The paper's out-of-distribution run: the HH-RLHF recipe's stages 1-3, then base, RE-Control and RE-Control +
    Prompting on HarmfulQA with the HH-RLHF value model at HH-RLHF's alpha and n, stages 5-6, each steered run judged
    against base (--judge True), and the table; the run names are the ones stage 4 writes."""
    import inference_intervention
    from utils.names import value_model_stem
    from utils.recipes import main
    from utils.stages.stage4_inference import plan_run
    recipe, hh = load(name), load(trained)
    main(recipe.SETTING, recipe.__doc__, ["--dry_run", "True", "--python", "python", "--output_dir", "out",
                                          "--judge", "True"])
    lines = [line.split(". ", 1)[1] for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    commands = [shlex.split(line) for line in lines]
    from utils.recipes import commands as hh_commands
    assert commands[:4] == hh_commands(hh.SETTING, "python", "out")[:4], "the HH-RLHF recipe's stages 1-3"
    assert all(os.path.exists(c[1]) for c in commands)
    scripts = [os.path.basename(c[1]) for c in commands[4:]]
    assert scripts == ["inference_intervention.py"] * 3 + ["measure_reward.py"] * 3 + ["metrics.py"] * 3 + \
        ["gpt4_eval.py"] * 2 + ["make_table.py"]
    flags = [dict(zip(c[2::2], c[3::2])) for c in commands[4:]]
    assert all(f.get("--dataset_name", "harmfulqa") == "harmfulqa" and f["--output_dir"] == "out" for f in flags)
    t = hh.SETTING
    stem = value_model_stem("out", t.model_name, "hh_rlhf", t.value_lr)
    for steer in flags[1:3]:
        assert steer["--value_model"] == stem + ".safetensors" and steer["--use_intervention"] == "True"
        assert (steer["--lr"], steer["--epochs"]) == (str(t.step_size), str(t.num_updates))
    assert flags[2]["--prompting"] == "True" and flags[0]["--use_intervention"] == "False"
    assert all(f["--reward_model"] == t.reward_model for f in flags[3:6])
    names = []
    for c in commands[4:7]:
        parsed = inference_intervention.parse_args(c[2:])
        names.append(plan_run(parsed.config, parsed.options).name)
    assert [f["--out_file"] for f in flags[3:6]] == names and [f["--run_name"] for f in flags[6:9]] == names
    assert names[1] == f"{t.model_name}_harmfulqa_value_model_{t.model_name}_hh_rlhf_{t.value_lr}_" \
                       f"{t.num_updates}_{t.step_size}"
    assert [(f["--run_name_red"], f["--run_name_blue"]) for f in flags[9:11]] == [(n, names[0]) for n in names[1:]]
    from utils.errors import UsageError
    with pytest.raises(UsageError, match="against the base"):
        main(recipe.SETTING, recipe.__doc__, ["--dry_run", "True", "--prefer_file", "p.json"])
