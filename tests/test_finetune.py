"""The fine-tuning baselines (finetune_baseline.py) on the tiny Llama: preference pairs, two-step DPO and RLOO runs
whose adapters stage 4 loads, a zero learning rate that answers like base, and names that never collide."""
import argparse
import os

import pytest
import torch

import finetune_baseline
import get_activations_only
import inference_intervention
import train_value_model
from conftest import QUESTIONS, write_jsonl
from helpers import copy_of, read_json, tag
from utils.errors import UsageError
from utils.io import save_tensors
from utils.models import resolve_model
from utils.stages.finetune import dataset_pairs, preference_data, rollout_pairs

D = "toy"
NEW = 4


# ----------------------------------------------------------------------------------------------------------------------
# Preference pairs

def record(prompt, answer):
    return {"prompt": prompt, "response": prompt + " " + answer, "results": answer, "conversation": "c:" + prompt}


def test_pairs_are_best_against_worst_and_ties_are_skipped():
    """Three prompts x three responses (in a row, as stage 1 writes them) with hand-made rewards."""
    records = [record("User: a\nAssistant:", x) for x in ("a0", "a1", "a2")]
    records += [record("User: b\nAssistant:", x) for x in ("b0", "b1", "b2")]
    records += [record("<|im_start|>assistant\n", x) for x in ("c0", "c1", "c2")]
    rewards = [0.1, -0.5, 0.7,   0.3, 0.3, 0.3,   -0.2, 0.4, -0.9]
    pairs, ties = rollout_pairs(records, rewards, 3)
    assert ties == 1, "prompt b: best and worst tie, no preference"
    assert pairs == [
        {"prompt": "User: a\nAssistant:", "chosen": " a2", "rejected": " a1", "conversation": "c:User: a\nAssistant:"},
        {"prompt": "<|im_start|>assistant\n", "chosen": "c1", "rejected": "c2",
         "conversation": "c:<|im_start|>assistant\n"},
    ]


def test_pairs_need_k_responses_per_prompt_in_a_row():
    records = [record("p", "x"), record("q", "y")]
    with pytest.raises(UsageError, match="do not share one prompt"):
        rollout_pairs(records, [0.0, 1.0], 2)
    with pytest.raises(UsageError, match="--num_samples 2"):
        rollout_pairs(records, [0.0, 1.0], 1)


def test_dataset_pairs_of_hh_rlhf_and_shp_local_files(tmp_path, tiny_llama_dir, tiny_tokenizer):
    """The data sets' own preferences, read from local files of their shapes through --data_file (auto)."""
    hh = write_jsonl(tmp_path / "hh_train.jsonl", [
        {"chosen": "\n\nHuman: Why is the sky blue?\n\nAssistant: Rayleigh scattering.",
         "rejected": "\n\nHuman: Why is the sky blue?\n\nAssistant: No idea."},
        {"chosen": "\n\nHuman: Hi\n\nAssistant: Same.", "rejected": "\n\nHuman: Hi\n\nAssistant: Same."}])
    shp = write_jsonl(tmp_path / "shp_train.jsonl", [
        {"post_id": "p1", "history": "Best pizza?", "human_ref_A": "Napoli.", "human_ref_B": "Frozen.", "labels": 0},
        {"post_id": "p1", "history": "Best pizza?", "human_ref_A": "Roman.", "human_ref_B": "Frozen.", "labels": 1}])
    spec = resolve_model(tiny_llama_dir)
    for name, path, expected, ties in (
            ("hh_rlhf", hh, [("User: Why is the sky blue?\nAssistant:", " Rayleigh scattering.", " No idea.")], 1),
            ("shp", shp, [("User: Best pizza?\nAssistant:", " Frozen.", " Napoli."),
                          ("User: Best pizza?\nAssistant:", " Roman.", " Frozen.")], 0)):
        args = argparse.Namespace(model_name=tiny_llama_dir, dataset_name=name, data_file=path, dataset_path=None,
                                  split="train", pairs="auto", max_prompt_tokens=512, limit=None, output_dir=".")
        pairs, tied, source = preference_data(args, spec, tiny_tokenizer)
        assert source == "dataset" and tied == ties
        assert [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs] == expected
    with pytest.raises(UsageError, match="neither chosen/rejected"):
        dataset_pairs([{"question": "q"}], spec, tiny_tokenizer)


# ----------------------------------------------------------------------------------------------------------------------
# Two-step runs on the tiny Llama

@pytest.fixture(scope="module")
def qfile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ft-questions")
    for split, qs in (("train", QUESTIONS), ("test", QUESTIONS[:3])):
        write_jsonl(folder / f"q_{split}.jsonl", [{"question": q} for q in qs])
    return str(folder / "q_{split}.jsonl")


def common(model_dir, out, qfile):
    return ["--model_name", model_dir, "--dataset_name", D, "--data_file", qfile, "--device", "cpu",
            "--output_dir", out]


def finetune(model_dir, out, qfile, method, *extra):
    finetune_baseline.main(common(model_dir, out, qfile) + ["--method", method, "--max_steps", "2", "--batch_size",
                                                            "2", "--max_new_tokens", str(NEW), *extra])


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, tiny_llama_dir, tiny_seqcls_rm_dir, qfile):
    """Stage 1 (2 sampled responses per training prompt) with planted labels (VADER rates a random model's text 0),
    a value model, then two-step LoRA DPO and RLOO (scored by a tiny sequence-classification reward model, whose
    rewards vary) and a DPO run with a zero learning rate."""
    out = str(tmp_path_factory.mktemp("finetune"))
    m = tag(tiny_llama_dir)
    get_activations_only.main(common(tiny_llama_dir, out, qfile) + ["--splits", "train", "--num_samples", "2",
                                                                    "--max_new_tokens", str(NEW)])
    save_tensors(torch.linspace(-1, 1, 2 * len(QUESTIONS)).roll(3), os.path.join(out, "features",
                                                                                   f"{m}_{D}_labels_train.json"))
    train_value_model.main(["--model_name", tiny_llama_dir, "--dataset_name", D, "--lr", "0.001", "--epochs", "2",
                            "--device", "cpu", "--eval_split", "train", "--output_dir", out])
    finetune(tiny_llama_dir, out, qfile, "dpo", "--learning_rate", "0.05")
    finetune(tiny_llama_dir, out, qfile, "rloo", "--learning_rate", "0.05", "--reward_model", tiny_seqcls_rm_dir)
    finetune(tiny_llama_dir, out, qfile, "dpo", "--learning_rate", "0", "--adapter_dir",
             os.path.join(out, "trained_model", "zero_lr_lora"))
    return out


def stage4(model_dir, out, qfile, *extra):
    inference_intervention.main(common(model_dir, out, qfile) + ["--max_new_tokens", str(NEW), "--batch_size", "2",
                                                                 *extra])


@pytest.mark.parametrize("method,name", [("dpo", "DPO"), ("rloo", "RLOO")])
def test_two_step_runs_write_an_adapter_that_stage_4_loads(tuned, tiny_llama_dir, qfile, method, name, tmp_path):
    from safetensors.torch import load_file
    m, tuned = tag(tiny_llama_dir), copy_of(tuned, tmp_path)
    folder = os.path.join(tuned, "trained_model", f"{m}_{D}_{method}_lora")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(os.listdir(folder))
    meta = read_json(folder + ".meta.json")
    assert meta["method_name"] == name and meta["steps"] == 2 and meta["settings"]["max_steps"] == 2
    assert 0 < meta["trainable_parameters"] < meta["total_parameters"]
    assert meta["train_seconds"] > 0 and meta["peak_rss_mb"] > 0 and meta["trl"] and meta["peft"]
    assert os.path.getsize(folder + "_training.png") > 1000 and os.path.exists(folder + "_log.csv")
    weights = load_file(os.path.join(folder, "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().max() > 0 for k, v in weights.items()), "the two steps moved the adapter"
    stage4(tiny_llama_dir, tuned, qfile, "--adapter", folder)
    run = os.path.join(tuned, "response", f"{m}_{D}_{method}_lora_base")
    records = read_json(run + ".json")
    assert len(records) == 3 and read_json(run + ".meta.json")["adapter"]["method_name"] == name


def test_adapter_changes_the_model_and_zero_learning_rate_answers_like_base(tuned, tiny_llama_dir, qfile, tmp_path):
    """A zero learning rate leaves LoRA's B at zero: merged, the 'fine-tuned' model answers exactly like base. The
    trained DPO adapter, merged, does change the weights (so --adapter is not ignored)."""
    from utils.models import load_model_and_tokenizer
    m, tuned = tag(tiny_llama_dir), copy_of(tuned, tmp_path)
    stage4(tiny_llama_dir, tuned, qfile)
    stage4(tiny_llama_dir, tuned, qfile, "--adapter", os.path.join(tuned, "trained_model", "zero_lr_lora"))
    base = read_json(os.path.join(tuned, "response", f"{m}_{D}_base.json"))
    zero = read_json(os.path.join(tuned, "response", f"{m}_{D}_zero_lr_lora_base.json"))
    assert [r["results"] for r in zero] == [r["results"] for r in base]
    plain, _ = load_model_and_tokenizer(resolve_model(tiny_llama_dir), "cpu", "float32")
    merged, _ = load_model_and_tokenizer(resolve_model(tiny_llama_dir, None, os.path.join(
        tuned, "trained_model", f"{m}_{D}_dpo_lora")), "cpu", "float32")
    same = [torch.equal(a, b) for a, b in zip(plain.state_dict().values(), merged.state_dict().values())]
    assert len(same) == len(plain.state_dict()) and not all(same)


def test_re_control_on_the_fine_tuned_model_reuses_the_value_model_by_path(tuned, tiny_llama_dir, qfile, tmp_path):
    m, tuned = tag(tiny_llama_dir), copy_of(tuned, tmp_path)
    adapter = os.path.join(tuned, "trained_model", f"{m}_{D}_dpo_lora")
    with pytest.raises(UsageError, match="reuse the base model's with --value_model"):
        stage4(tiny_llama_dir, tuned, qfile, "--adapter", adapter, "--use_intervention", "True", "--value_lr",
               "0.001", "--lr", "1.0", "--epochs", "2")
    value_model = os.path.join(tuned, "trained_model", f"value_model_{m}_{D}_0.001_ep2")
    stage4(tiny_llama_dir, tuned, qfile, "--adapter", adapter, "--use_intervention", "True", "--value_model",
           value_model, "--lr", "1.0", "--epochs", "2")
    meta = read_json(os.path.join(tuned, "response", f"{m}_{D}_dpo_lora_value_model_{m}_{D}_0.001_ep2_2_1.0.meta.json"))
    assert meta["method"] == "re_control" and meta["adapter"]["method"] == "dpo"


def test_adapter_names_never_take_the_base_model_names(tiny_llama_dir, tmp_path):
    """Every stage-4 and comparison-method name, and stage 1's files, with and without --adapter."""
    import decode_methods
    from utils.names import named_dataset
    from utils.stages.stage1_activations import split_outputs
    from utils.stages.stage4_inference import plan_run
    m = tag(tiny_llama_dir)
    adapter = str(tmp_path / f"{m}_{D}_dpo_lora")
    names = {}
    for with_adapter in (False, True):
        extra = ["--adapter", adapter] if with_adapter else []
        for flags in (["--use_intervention", "False"], ["--use_intervention", "False", "--prompting", "True"],
                      ["--use_intervention", "True", "--lr", "1.0", "--epochs", "2"],
                      ["--use_intervention", "True", "--lr", "1.0", "--epochs", "2", "--prompting", "True"]):
            parsed = inference_intervention.parse_args(["--model_name", tiny_llama_dir, "--dataset_name", D, *flags,
                                                        *extra, "--value_model", str(tmp_path / "vm")])
            names.setdefault(with_adapter, []).append(plan_run(parsed.config, parsed.options).name)
        for method in ("static_re", "best_of_n", "args", "cd_prefix"):
            parsed = decode_methods.parse_args(["--model_name", tiny_llama_dir, "--dataset_name", D, "--method",
                                                method, *extra, "--value_model", str(tmp_path / "vm")])
            names[with_adapter].append(plan_run(parsed.config, parsed.options).name)
        args = get_activations_only.parse_args(["--model_name", tiny_llama_dir, "--dataset_name", D, "--output_dir",
                                                str(tmp_path), *extra])
        names[with_adapter] += split_outputs(args, m, "train")
        assert named_dataset(args) == (f"{D}_dpo_lora" if with_adapter else D)
    assert names[False][0] == f"{m}_{D}_base" and names[True][0] == f"{m}_{D}_dpo_lora_base"
    assert len(set(names[False]) | set(names[True])) == 2 * len(names[False]), "no name is shared"
    assert all("dpo_lora" in name for name in names[True])


def test_ppo_is_refused_with_the_way_to_rloo_and_vllm_with_an_adapter(tmp_path):
    from utils.vllm_engine import VllmDecoder
    with pytest.raises(UsageError, match="no PPOTrainer: use --method rloo"):
        finetune_baseline.main(["--method", "ppo", "--output_dir", str(tmp_path)])
    with pytest.raises(UsageError, match="--engine hf only"):
        VllmDecoder.from_config(argparse.Namespace(adapter="x"), None, None, True)
    with pytest.raises(UsageError, match="no adapter_config.json"):
        resolve_model("smollm2_135M", None, str(tmp_path))


def test_compare_methods_adds_the_fine_tuning_rows_and_their_costs(tuned, tiny_llama_dir, qfile, tmp_path):
    import csv

    import compare_methods
    m, tuned = tag(tiny_llama_dir), copy_of(tuned, tmp_path)
    compare_methods.main(["--model_name", tiny_llama_dir, "--dataset_name", D, "--device", "cpu", "--max_new_tokens",
                          str(NEW), "--batch_size", "2", "--output_dir", tuned, "--lr", "1.0", "--epochs", "2",
                          "--value_lr", "0.001", "--data_file", qfile, "--methods", "re_control", "--dpo_adapter",
                          os.path.join(tuned, "trained_model", f"{m}_{D}_dpo_lora"), "--online_adapter",
                          os.path.join(tuned, "trained_model", f"{m}_{D}_rloo_lora"), "--overwrite", "True"])
    stem = os.path.join(tuned, "results", f"{m}_{D}_comparison")
    with open(stem + ".csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["Base", "RE-Control (α=1.0, n=2)", "DPO (LoRA)",
                                           "DPO (LoRA) + RE-Control (α=1.0, n=2)", "RLOO (LoRA)"]
    assert all(r["vs base"] != "" for r in rows[1:])
    with open(stem + "_training.csv") as f:
        costs = {r["method"]: r for r in csv.DictReader(f)}
    assert list(costs) == ["RE-Control", "DPO (LoRA)", "DPO (LoRA) + RE-Control", "RLOO (LoRA)"]
    dpo = read_json(os.path.join(tuned, "trained_model", f"{m}_{D}_dpo_lora.meta.json"))
    value = read_json(os.path.join(tuned, "trained_model", f"value_model_{m}_{D}_0.001_ep2.json"))
    assert int(costs["DPO (LoRA)"]["trained parameters"]) == dpo["trainable_parameters"]
    assert int(costs["RE-Control"]["trained parameters"]) == value["num_parameters"] == 32 * 32 + 32 + 32 + 1
    assert int(costs["DPO (LoRA) + RE-Control"]["trained parameters"]) == dpo["trainable_parameters"] + 32 * 33 + 33
    with open(stem + ".md") as f:
        assert "Training cost:" in f.read()
