"""Pref-CTRL's preference-margin loss in stage 3 (issue 20): a hand computation, the pairing of a prompt's best and
worst responses in one batch, and a value model whose file and metadata name the variant."""
import os

import pytest
import torch

from helpers import D, read_json, tag
from utils.features import SequenceData
from utils.training import ValueTrainingConfig, fit_value_model, with_prompt_groups
from utils.value_model import preference_margin_loss


def test_the_margin_loss_equals_a_hand_computation():
    # five responses to two prompts, one of them alone; values of every valid step back to back
    lengths = torch.tensor([2, 1, 3, 2, 1])
    values = torch.tensor([0.2, 0.4, 0.1, 0.5, 0.6, 0.7, -0.2, 0.0, 0.9])
    rewards = torch.tensor([0.9, -0.5, 0.3, 0.8, 0.1])
    groups = torch.tensor([0, 0, 1, 1, 2])
    # means: 0.3, 0.1, 0.6, -0.1, 0.9. Prompt 0: best (0.9) mean 0.3, worst (-0.5) mean 0.1 -> relu(0.5 - 0.2) = 0.3
    # prompt 1: best (0.8) mean -0.1, worst (0.3) mean 0.6 -> relu(0.5 + 0.7) = 1.2; prompt 2: one response, no pair
    loss = preference_margin_loss(values, lengths, rewards, groups, margin=0.5)
    torch.testing.assert_close(loss, torch.tensor((0.3 + 1.2) / 2))
    assert preference_margin_loss(values, lengths, torch.zeros(5), groups, 0.5).item() == 0.0  # ties: no pairs


def test_training_with_the_margin_pairs_each_prompts_responses_in_one_batch():
    torch.manual_seed(0)
    lengths = torch.tensor([3, 2, 4, 3, 2, 2, 3, 1])
    data = SequenceData(torch.randn(int(lengths.sum()), 6), lengths, torch.tensor([1., 0., .2, .9, .5, .4, 0., 1.]))
    prompts = ["a", "a", "b", "b", "c", "c", "d", "d"]
    config = ValueTrainingConfig(lr=1e-2, epochs=3, batch_size=4, margin_weight=1.0, margin=0.5, hidden_dim=8)
    with pytest.raises(Exception, match="pairs each prompt's responses"):
        fit_value_model(data, config)
    seen = []
    import utils.training as training
    original = training.preference_margin_loss

    def spy(values, lengths, rewards, groups, margin):
        seen.append(groups.tolist())
        return original(values, lengths, rewards, groups, margin)
    training.preference_margin_loss = spy
    try:
        fit_value_model(with_prompt_groups(data, prompts), config)
    finally:
        training.preference_margin_loss = original
    assert seen and all(sorted(batch).count(g) == 2 for batch in seen for g in set(batch))  # pairs kept together


def test_stage3_names_the_margin_variant_in_the_file_and_its_metadata(pipeline, tiny_llama_dir, tmp_path):
    import train_value_model
    from helpers import copy_of
    out = copy_of(pipeline, tmp_path)
    train_value_model.main(["--model_name", tiny_llama_dir, "--dataset_name", D, "--lr", "0.001", "--epochs", "2",
                            "--batch_size", "2", "--device", "cpu", "--output_dir", out, "--margin_weight", "0.5"])
    stem = os.path.join(out, "trained_model", f"value_model_{tag(tiny_llama_dir)}_{D}_0.001_ep2_bs2_pm0.5")
    assert os.path.exists(stem + ".safetensors")
    assert read_json(stem + ".json")["settings"]["margin_weight"] == 0.5
