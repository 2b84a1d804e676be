"""The figures of README.md and docs/results.md, recomputed from the committed per-prompt files (results/per_prompt/,
written by scripts/replicate.sh): no figure there needs a run to be checked, and none can drift from its data."""
import json
import os
import re
import subprocess

import pytest

import replicate_report
from utils.metrics import mean_and_se
from utils.results import load_per_prompt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PER_PROMPT = os.path.join(ROOT, "results", "per_prompt", "replicate")
REPORT = os.path.join(ROOT, "results", "smollm2_135M_demo_replicate")


def read(path):
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def demo_draw():
    """{method: PerPrompt} of the demo's draw (seed 0): what scripts/demo.sh reproduces."""
    return replicate_report.draw_runs(os.path.join(PER_PROMPT, "seed0"))


def pm(values):
    mean, se = mean_and_se(values)
    return f"{mean:+.4f} ± {se:.4f}"


def test_the_replicate_report_is_what_its_per_prompt_files_give(tmp_path):
    out = str(tmp_path / "report")
    replicate_report.main(["--per_prompt", PER_PROMPT, "--out", out])
    assert open(out + ".md").read() == read(REPORT + ".md")
    assert json.load(open(out + ".json")) == json.loads(read(REPORT + ".json"))
    assert len(json.load(open(out + ".json"))["draws"]) >= 5


def test_readme_quotes_the_demo_draw():
    runs = demo_draw()
    base, steered = runs["base"], runs["re_control"]
    readme = read("README.md")
    for column in (base.reward_model, base.heldout_reward_model):
        figure = pm([a - b for a, b in zip(steered.column(column), base.column(column))])
        assert figure in readme, f"README.md should quote RE-Control - base under {column}: {figure}"
    fresh = [i for i in base.ids() if int(i.split("-")[1]) >= 101]
    figure = pm([a - b for a, b in zip(steered.column("vader", fresh), base.column("vader", fresh))])
    assert figure in readme, f"README.md should quote RE-Control - base on test-0101..0250: {figure}"


def test_readme_and_results_quote_the_over_draws_figures():
    report = json.loads(read(REPORT + ".json"))
    for key in ("re_control-base", "re_control-static_re"):
        s = report["over_draws"][key]["all"]
        figure = f"{s['mean']:+.4f} ± {s['se']:.4f}"
        interval = f"[{s['low']:+.4f}, {s['high']:+.4f}]"
        for page in ("README.md", "docs/results.md"):
            text = read(page)
            assert figure in text and interval in text, f"{page} should quote {key} over draws: {figure} {interval}"


def test_the_demo_setting_was_chosen_for_the_demo_value_model():
    sweep = json.loads(read("results/smollm2_135M_demo_sweep.json"))
    static = json.loads(read("results/smollm2_135M_demo_sweep_static_re.json"))
    runs = demo_draw()
    assert sweep["value_model_sha256"] == runs["re_control"].value_model_sha256
    assert static["value_model_sha256"] == runs["static_re"].value_model_sha256
    assert sweep["split"] == static["split"] == "tune"


def test_the_demo_learning_rate_is_the_tuning_split_choice():
    choice = json.loads(read("results/smollm2_135M_demo_value_lr.json"))
    assert choice["split"] == "tune"
    assert choice["chosen_lr"] == min(choice["rows"], key=lambda r: r["tune_loss"])["lr"]
    lr = subprocess.run(["bash", "-c", "source scripts/demo_settings.sh; echo $VALUE_LR"], cwd=ROOT, check=True,
                        capture_output=True, text=True).stdout.strip()
    assert float(lr) == choice["chosen_lr"]


@pytest.mark.parametrize("folder", sorted(os.listdir(PER_PROMPT)) if os.path.isdir(PER_PROMPT) else [])
def test_every_per_prompt_file_describes_itself(folder):
    for name in os.listdir(os.path.join(PER_PROMPT, folder)):
        if not name.endswith(".json"):
            continue
        record = load_per_prompt(os.path.join(PER_PROMPT, folder, name))
        assert record.columns[:3] == ["id", "vader", "textblob"]
        assert all(re.fullmatch(r"(test|tune)-\d{4}", i) for i in record.ids())
        assert record.settings["split"] == record.split
        if record.method == "re_control":
            assert re.fullmatch(r"[0-9a-f]{64}", record.value_model_sha256)


def test_the_demo_run_reproduced_its_draw():
    """results/per_prompt/demo (a fresh clone's `bash scripts/demo.sh`) holds the replicate's seed-0 answers' scores,
    prompt for prompt, and the same value-model weights."""
    folder = os.path.join(ROOT, "results", "per_prompt", "demo")
    demo = {r.method: r for r in (load_per_prompt(os.path.join(folder, f)) for f in sorted(os.listdir(folder)))}
    draw = demo_draw()
    for method in ("base", "re_control"):
        assert demo[method].rows == draw[method].rows
    assert demo["re_control"].value_model_sha256 == draw["re_control"].value_model_sha256


@pytest.mark.parametrize("host", ["", "_avx2"])  # the same command on two hosts (docs/prompt-dependent.md)
def test_the_polar_report_is_what_its_per_prompt_files_give_and_the_docs_quote_it(tmp_path, host):
    out, report = str(tmp_path / "polar"), f"results/smollm2_135M_demo_polar_replicate{host}"
    replicate_report.main(["--per_prompt", f"results/per_prompt/polar{host}", "--out", out, "--first_untouched", "1",
                           "--group_by", "polarity"])
    assert open(out + ".md").read() == read(report + ".md")
    pooled = json.load(open(out + ".json"))["over_draws"]
    assert len(json.load(open(out + ".json"))["draws"]) >= 5
    page = read("docs/prompt-dependent.md")
    options = [key for key in pooled if key.startswith("re_control_") and key.endswith(("-re_control", "-static_re"))]
    for key in ("re_control-static_re", "re_control-base", "static_re-base", *options):
        s = pooled[key]["all"]
        assert f"{s['mean']:+.4f} ± {s['se']:.4f}".replace("-", "−") in page.replace("-", "−"), key
    assert len(options) == (2 if host == "" else 6), options  # the refit (Intel); the two gates, the margin (AVX2)


def test_the_polar_halves_table_is_what_the_per_prompt_files_give(tmp_path):
    import polar_halves
    out = str(tmp_path / "halves.md")
    polar_halves.main(["--out", out])
    assert open(out).read() == read("results/smollm2_135M_demo_polar_halves.md")


@pytest.mark.parametrize("folder,name,page", [("demo_avx2", "smollm2_135M_demo", "README.md"),
                                               ("demo_avx512", "smollm2_135M_demo", "README.md"),
                                               ("ood_avx2", "smollm2_135M_demo_ood_value_model_smollm2_135M_demo",
                                                "docs/comparisons.md")])
def test_other_hosts_demo_figures_are_what_their_per_prompt_files_give(folder, name, page):
    """The demo and its OOD run from a fresh clone on other hosts: the quoted paired figures, from the files."""
    steered = load_per_prompt(f"results/per_prompt/{folder}/{name}_0.001_td1_vf0.1_es_10_3.0.json")
    base = load_per_prompt(f"results/per_prompt/{folder}/{name.split('_value_model')[0]}_base.json")
    assert steered.ids() == base.ids()
    text = read(page).replace("−", "-")
    for scorer in ("vader", "textblob"):
        mean, se = mean_and_se([a - b for a, b in zip(steered.column(scorer), base.column(scorer))])
        assert f"{mean:+.4f} ± {se:.4f}" in text, (scorer, mean, se)
