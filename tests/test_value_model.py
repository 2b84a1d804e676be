"""The Bellman loss on hand-computed cases, and self-describing value-model files."""
import json

import pytest
import torch

from utils.cli import UsageError
from utils.value_model import ValueModel, bellman_loss, load_value_model, pack_padded, save_value_model


def test_bellman_loss_hand_computed_uses_last_valid_step():
    # two sequences: values 1, 2, 4 (3 valid steps) and 3, 5 (2 valid steps of 4; padding after)
    features = torch.tensor([[[1.], [2.], [4.], [9.]], [[3.], [5.], [7.], [7.]]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    values, lengths = pack_padded(features, mask)
    values = values.squeeze(-1)
    rewards = torch.tensor([10., -1.])
    loss, td, terminal = bellman_loss(values, lengths, rewards)
    # td: (1-2)^2 + (2-4)^2 + (3-5)^2 = 1 + 4 + 4 = 9; terminal uses the LAST valid step: (4-10)^2 + (5+1)^2 = 72
    assert td.item() == pytest.approx(9 / 2)
    assert terminal.item() == pytest.approx(72 / 2)
    assert loss.item() == pytest.approx(81 / 2)
    # the original's first-step index would give (1-10)^2 + (3+1)^2 = 97: a different number
    assert terminal.item() != pytest.approx(97 / 2)


def test_bellman_target_is_detached_by_default():
    values = torch.tensor([1., 2., 4.], requires_grad=True)
    lengths, rewards = torch.tensor([3]), torch.tensor([4.])
    bellman_loss(values, lengths, rewards)[0].backward()
    # d/dv of (v0-v1)^2 + (v1-v2)^2 + (v2-4)^2 with v1, v2 detached as targets: only as predictions
    assert values.grad.tolist() == pytest.approx([2 * (1 - 2), 2 * (2 - 4), 0.0])
    values.grad = None
    bellman_loss(values, lengths, rewards, detach_target=False)[0].backward()
    assert values.grad.tolist() == pytest.approx([2 * (1 - 2), -2 * (1 - 2) + 2 * (2 - 4), -2 * (2 - 4)])


def test_single_step_sequences():
    loss, td, terminal = bellman_loss(torch.tensor([1., 2.]), torch.tensor([1, 1]), torch.tensor([0., 0.]))
    assert td.item() == 0 and terminal.item() == pytest.approx(5 / 2)


@pytest.mark.parametrize("num_layers", [2, 3])
def test_saved_value_model_describes_itself(tmp_path, num_layers):
    torch.manual_seed(0)
    model = ValueModel(12, 20, num_layers)
    stem = str(tmp_path / "value_model_x_demo_0.001")
    save_value_model(model, stem, llm="smollm2_135M", dataset="demo")
    loaded = load_value_model(stem)
    assert loaded.config["num_layers"] == num_layers and loaded.config["hidden_dim"] == 20
    assert loaded.config["llm"] == "smollm2_135M"
    assert json.load(open(stem + ".json"))["input_dim"] == 12
    x = torch.randn(4, 12)
    assert torch.equal(loaded(x), model(x))


def test_original_pth_state_dict_loads_by_shape(tmp_path):
    torch.manual_seed(0)
    model = ValueModel(12, 20, 3)
    stem = str(tmp_path / "value_model_orig")
    torch.save({f"layer{i}.{k.split('.')[-1]}": v for i, (k, v) in enumerate(model.state_dict().items())},
               stem + ".pth")
    loaded = load_value_model(stem)
    assert loaded.config == {"input_dim": 12, "hidden_dim": 20, "num_layers": 3}
    x = torch.randn(4, 12)
    assert torch.equal(loaded(x), model(x))


def test_missing_value_model_names_the_stage(tmp_path):
    with pytest.raises(UsageError, match="train_value_model.py"):
        load_value_model(str(tmp_path / "nothing"))
