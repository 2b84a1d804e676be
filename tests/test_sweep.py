"""sweep.py on a 2 x 2 grid with the tiny Llama: the chosen cells follow the stated rules (recomputed here from the
per-cell stage-5/6 files), the run resumes, and stage 4 / Static RE read the choice back."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import get_activations_only
import inference_intervention
import reward_label
import sweep
import train_value_model
from conftest import QUESTIONS, ROOT, write_jsonl
from helpers import D, copy_of, llm_args, read_json, tag
from utils.errors import UsageError
from utils.io import save_tensors

TUNE_QUESTIONS = ["I feel sad and tired today, any advice?", "Thank you for the great help, what next?",
                  "Why is my happy dog barking?"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory, tiny_llama_dir):
    folder = tmp_path_factory.mktemp("sweep-questions")
    for split, qs in (("train", QUESTIONS), ("test", QUESTIONS[:2]), ("tune", TUNE_QUESTIONS)):
        write_jsonl(folder / f"q_{split}.jsonl", [{"question": q} for q in qs])
    qfile = str(folder / "q_{split}.jsonl")
    out = str(tmp_path_factory.mktemp("sweep-run"))
    get_activations_only.main(llm_args(tiny_llama_dir, out, qfile, "--num_samples", "2"))
    for mode in ("train", "test"):
        reward_label.main(["--model_name", tiny_llama_dir, "--dataset_name", D, "--mode", mode, "--output_dir", out])
    # VADER finds little sentiment in a random model's text: plant labels that vary, so the probe has a direction
    labels = os.path.join(out, "features", f"{tag(tiny_llama_dir)}_{D}_labels_train.json")
    save_tensors(torch.linspace(-1, 1, len(QUESTIONS) * 2), labels)
    train_value_model.main(["--model_name", tiny_llama_dir, "--dataset_name", D, "--lr", "0.01", "--epochs", "3",
                            "--batch_size", "4", "--device", "cpu", "--output_dir", out])
    common = llm_args(tiny_llama_dir, out, qfile, "--split", "tune", "--value_lr", "0.01",
                      "--embedding_model", "minilm")
    sweep.main(common + ["--step_sizes", "0.5,50", "--num_updates", "1,3"])
    return out, qfile, common


def own_copy(swept, tmp_path):
    """(out, qfile, common) of a copy of the swept folder, for a test that writes into it."""
    out, qfile, common = swept
    copy = copy_of(out, tmp_path)
    return copy, qfile, [copy if arg == out else arg for arg in common]


def cell_scores(out, run):
    reward = read_json(os.path.join(out, "final_reward", f"{run}.json"))
    evaluation = read_json(os.path.join(out, "evaluations", f"{run}.json"))
    return reward["average_reward"], evaluation["diversity"], evaluation["coherence"]


def test_sweep_writes_every_cell_and_names_the_cell_the_paper_rule_picks(swept, tiny_llama_dir):
    out, _, _ = swept
    stem = os.path.join(out, "results", f"{tag(tiny_llama_dir)}_{D}_sweep")
    for ext in ("json", "csv", "md", "png"):
        assert os.path.getsize(f"{stem}.{ext}") > 0
    result = read_json(stem + ".json")
    assert result["split"] == "tune" and result["num_prompts"] == 3 and result["rule"] == "paper"
    grid = [(c["step_size"], c["num_updates"]) for c in result["cells"]]
    assert sorted(grid) == [(0.5, 1), (0.5, 3), (50.0, 1), (50.0, 3)]
    # the rule recomputed from the stage-5/6 files of each cell: coherence + diversity + average reward
    scores = {}
    for cell in result["cells"]:
        reward, div, coh = cell_scores(out, cell["run"])
        scores[(cell["step_size"], cell["num_updates"])] = coh + div + reward
        records = read_json(os.path.join(out, "response", f"{cell['run']}.json"))
        assert len(records) == 3 and records[0]["prompt"] == f"User: {TUNE_QUESTIONS[0]}\nAssistant:"
    best = max(scores, key=scores.get)
    assert (result["chosen"]["step_size"], result["chosen"]["num_updates"]) == best
    # the constrained rule: the highest reward among cells within 0.9x diversity and 0.95x coherence of base
    base_reward, base_div, base_coh = cell_scores(out, result["base"]["run"])
    ok = {k: cell_scores(out, c["run"])[0] for k, c in zip(grid, result["cells"])
          if cell_scores(out, c["run"])[1] >= 0.9 * base_div and cell_scores(out, c["run"])[2] >= 0.95 * base_coh}
    constrained = result["rules"]["constrained"]
    if ok:
        assert ok[(constrained["step_size"], constrained["num_updates"])] == max(ok.values())
    else:
        assert constrained is None
    md = open(stem + ".md").read()
    assert "Paper rule: alpha" in md and "'tune' split" in md


def test_the_cells_scores_name_the_sweeps_policy_and_data_set(swept, tiny_llama_dir):
    out, _, _ = swept
    result = read_json(os.path.join(out, "results", f"{tag(tiny_llama_dir)}_{D}_sweep.json"))
    for run in [result["base"]["run"]] + [c["run"] for c in result["cells"]]:
        args = read_json(os.path.join(out, "final_reward", f"{run}.meta.json"))["args"]
        assert (args["model_name"], args["dataset_name"]) == (tiny_llama_dir, D)


def test_a_sweep_of_another_value_model_reuses_the_base_run(swept, tiny_llama_dir, tmp_path):
    """Base reads no value model: a sweep with --value_model in the same folder answers only its own cells."""
    out, _, common = own_copy(swept, tmp_path)
    m = tag(tiny_llama_dir)
    stem = os.path.join(out, "trained_model", f"value_model_{m}_{D}_0.01_ep3_bs4")
    other = os.path.join(out, "trained_model", "other_value_model")
    for ext in (".safetensors", ".json"):
        shutil.copy(stem + ext, other + ext)
    base = os.path.join(out, "response", f"{m}_{D}_tune_base.json")
    written = os.stat(base).st_mtime_ns
    sweep.main(common + ["--step_sizes", "0.5", "--num_updates", "1", "--value_model", other,
                         "--name", "other_sweep"])
    assert os.stat(base).st_mtime_ns == written
    result = read_json(os.path.join(out, "results", "other_sweep.json"))
    assert result["base"]["run"] == f"{m}_{D}_tune_base" and result["value_model"] == other
    assert [c["run"] for c in result["cells"]] == [f"{m}_{D}_tune_other_value_model_1_0.5"]


def test_a_huge_step_changes_the_answers_and_a_small_one_less(swept):
    """The grid really edits: alpha 50 with 3 updates differs from base on some prompt."""
    out, _, _ = swept
    result = read_json(os.path.join(out, "results", [f for f in os.listdir(os.path.join(out, "results"))
                                                      if f.endswith("_sweep.json")][0]))
    base = [r["results"] for r in read_json(os.path.join(out, "response", f"{result['base']['run']}.json"))]
    big = [c for c in result["cells"] if c["step_size"] == 50.0 and c["num_updates"] == 3][0]
    edited = [r["results"] for r in read_json(os.path.join(out, "response", f"{big['run']}.json"))]
    assert edited != base


def test_sweep_resumes_without_regenerating(swept, capsys):
    # On the shared folder itself, not a copy: the cells' records name the value model by its absolute path, so a
    # copy elsewhere is "a run with other settings". A resumed sweep rewrites only results/ (the same grid again).
    out, _, common = swept
    before = {f: os.path.getmtime(os.path.join(out, "response", f)) for f in os.listdir(os.path.join(out, "response"))}
    sweep.main(common + ["--step_sizes", "0.5,50", "--num_updates", "1,3"])
    printed = capsys.readouterr().out
    assert printed.count("already written with these settings") == 5  # stage 4: base + 4 cells
    assert printed.count("already scored with these settings") == 5  # stage 5
    assert printed.count("already evaluated with these settings") == 5  # stage 6
    after = {f: os.path.getmtime(os.path.join(out, "response", f)) for f in os.listdir(os.path.join(out, "response"))}
    assert before == after


def test_cells_answered_without_prefill_reuse_are_the_same_bytes(swept, tiny_llama_dir, tmp_path):
    """The sweep above reused each batch's prefill (the default); a sweep with --prefill_memory_gb 0 computes every
    prefill and writes the same answers."""
    out, _, common = own_copy(swept, tmp_path)
    result = read_json(os.path.join(out, "results", f"{tag(tiny_llama_dir)}_{D}_sweep.json"))
    for cell in result["cells"]:
        for folder in ("response", "final_reward", "evaluations"):
            for ext in (".json", ".meta.json"):
                os.remove(os.path.join(out, folder, cell["run"] + ext))
    sweep.main(common + ["--step_sizes", "0.5,50", "--num_updates", "1,3", "--prefill_memory_gb", "0"])
    for cell in result["cells"]:
        again = read_json(os.path.join(out, "response", f"{cell['run']}.json"))
        assert again == read_json(os.path.join(swept[0], "response", f"{cell['run']}.json"))


def test_stage4_reads_the_chosen_setting(swept, tiny_llama_dir, tmp_path):
    out, qfile, _ = own_copy(swept, tmp_path)
    m = tag(tiny_llama_dir)
    path = os.path.join(out, "results", f"{m}_{D}_sweep.json")
    chosen = read_json(path)["chosen"]
    inference_intervention.main(llm_args(tiny_llama_dir, out, qfile, "--use_intervention", "True", "--value_lr",
                                         "0.01", "--settings_from", path))
    name = f"{m}_{D}_0.01_ep3_bs4_{chosen['num_updates']}_{chosen['step_size']}"
    meta = read_json(os.path.join(out, "response", f"{name}.meta.json"))
    assert meta["step_size"] == chosen["step_size"] and meta["num_updates"] == chosen["num_updates"]
    with pytest.raises(UsageError, match="either --settings_from or --lr"):
        inference_intervention.main(llm_args(tiny_llama_dir, out, qfile, "--use_intervention", "True",
                                             "--settings_from", path, "--lr", "1"))


def test_stage4_refuses_a_setting_chosen_for_another_value_model(swept, tiny_llama_dir, tmp_path):
    from utils.sweep import chosen_for
    from utils.sweep import main as sweep_check
    from utils.table import gather, notes
    from utils.value_model import value_model_fingerprint
    out, qfile, _ = own_copy(swept, tmp_path)
    m = tag(tiny_llama_dir)
    path = os.path.join(out, "results", f"{m}_{D}_sweep.json")
    stem = os.path.join(out, "trained_model", f"value_model_{m}_{D}_0.01_ep3_bs4")
    assert read_json(path)["value_model_sha256"] == value_model_fingerprint(stem)
    assert chosen_for(path, value_model_fingerprint(stem)) and sweep_check([path, stem + ".safetensors"]) == 0
    # another draw of the value model (seed 1): the sweep's choice was not made for it
    train_value_model.main(["--model_name", tiny_llama_dir, "--dataset_name", D, "--lr", "0.01", "--epochs", "3",
                            "--batch_size", "4", "--device", "cpu", "--output_dir", out, "--seed", "1",
                            "--value_model", stem, "--overwrite", "True"])
    assert read_json(path)["value_model_sha256"] != value_model_fingerprint(stem)
    assert not chosen_for(path, value_model_fingerprint(stem)) and not chosen_for(path, None)
    # what scripts/demo.sh runs to decide whether to sweep its own value model
    shell_check = subprocess.run([sys.executable, "-m", "utils.sweep", path, stem], cwd=ROOT)
    assert shell_check.returncode == 1
    steered = llm_args(tiny_llama_dir, out, qfile, "--use_intervention", "True", "--value_lr", "0.01",
                       "--settings_from", path)
    with pytest.raises(UsageError, match="chosen for another value model.*--allow_other_value_model True"):
        inference_intervention.main(steered)
    assert not [f for f in os.listdir(os.path.join(out, "response")) if not f.startswith(f"{m}_{D}_tune")]
    inference_intervention.main(steered + ["--allow_other_value_model", "True"])
    inference_intervention.main(llm_args(tiny_llama_dir, out, qfile, "--use_intervention", "False"))
    (run,) = [f[:-len(".meta.json")] for f in os.listdir(os.path.join(out, "response"))
              if f.endswith(".meta.json") and "_tune" not in f and "_base" not in f]
    settings = read_json(os.path.join(out, "response", f"{run}.meta.json"))["settings"]
    assert settings["value_model_sha256"] == value_model_fingerprint(stem)
    assert settings["settings_chosen_for_this_value_model"] is False
    for name in (run, f"{m}_{D}_base"):
        import measure_reward
        import metrics
        measure_reward.main(["--output_dir", out, "--out_file", name, "--model_name", tiny_llama_dir])
        metrics.main(["--output_dir", out, "--run_name", name, "--embedding_model", "minilm"])
    rows = gather(out, f"{m}_{D}", f"{m}_{D}_base")
    assert "chosen for another value model than this run's" in notes(rows)


def test_static_re_is_swept_and_read_back(swept, tiny_llama_dir, tmp_path):
    import decode_methods
    from utils.stages.stage4_inference import plan_run
    out, qfile, common = own_copy(swept, tmp_path)
    sweep.main(common + ["--method", "static_re", "--strengths", "0,3"])
    m = tag(tiny_llama_dir)
    path = os.path.join(out, "results", f"{m}_{D}_sweep_static_re.json")
    result = read_json(path)
    assert [c["strength"] for c in result["cells"]] == [0.0, 3.0]
    zero = read_json(os.path.join(out, "response", f"{result['cells'][0]['run']}.json"))
    base = read_json(os.path.join(out, "response", f"{result['base']['run']}.json"))
    assert [r["results"] for r in zero] == [r["results"] for r in base], "strength 0 equals base"
    parsed = decode_methods.parse_args(llm_args(tiny_llama_dir, out, qfile, "--method", "static_re",
                                                "--settings_from", path))
    assert plan_run(parsed.config, parsed.options).options.strength == result["chosen"]["strength"]
    with pytest.raises(UsageError, match="not 're_control'|for 'static_re'"):
        inference_intervention.main(llm_args(tiny_llama_dir, out, qfile, "--use_intervention", "True",
                                             "--value_lr", "0.01", "--settings_from", path))


def test_a_file_that_is_not_a_sweep_result_is_refused(tmp_path):
    from utils.sweep import read_choice
    path = tmp_path / "x.json"
    path.write_text(json.dumps([{"prompt": "a"}]))
    with pytest.raises(UsageError, match="not a sweep result"):
        read_choice(str(path), "re_control")
