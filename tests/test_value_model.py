"""The Bellman loss on hand-computed cases, and self-describing value-model files."""
import json
import os

import pytest
import torch

from utils.errors import UsageError
from utils.training import split_by_group
from utils.value_model import (
    ValueModel,
    bellman_loss,
    fold_output_affine,
    lambda_returns,
    load_value_model,
    monte_carlo_error,
    pack_padded,
    save_value_model,
)


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


def test_single_step_sequences_have_zero_td_loss_and_only_the_terminal_loss():
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


# ----------------------------------------------------------------------------------------------------------------------
# The value target: TD(lambda)

def paper_td0_loss(values, lengths, rewards):
    """Today's (the paper's) TD(0) loss written out sequence by sequence: the oracle for --td_lambda 0."""
    td, terminal, start = 0.0, 0.0, 0
    for length, reward in zip(lengths.tolist(), rewards):
        seq = values[start:start + length]
        td = td + ((seq[:-1] - seq[1:].detach()) ** 2).sum()
        terminal = terminal + (seq[-1] - reward) ** 2
        start += length
    return (td + terminal) / len(lengths), td / len(lengths), terminal / len(lengths)


def test_td_lambda_0_equals_the_paper_loss_exactly():
    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([5, 1, 3, 7, 2])
    values = torch.randn(int(lengths.sum()), generator=gen, requires_grad=True)
    rewards = torch.randn(5, generator=gen)
    ours = bellman_loss(values, lengths, rewards, td_lambda=0.0)
    ours[0].backward()
    grad, values.grad = values.grad.clone(), None
    oracle = paper_td0_loss(values, lengths, rewards)
    oracle[0].backward()
    for a, b in zip(ours, oracle):
        assert torch.allclose(a, b, rtol=1e-6, atol=0)
    assert torch.allclose(grad, values.grad, rtol=1e-6, atol=0)
    # the general lambda-return at lambda = 0 is V(o_{t+1}) to the bit, so both code paths agree exactly
    last = torch.cumsum(lengths, 0) - 1
    has_next = torch.ones(int(lengths.sum()), dtype=torch.bool)
    has_next[last] = False
    targets = lambda_returns(values.detach(), lengths, rewards, 0.0)
    assert torch.equal(targets[has_next], values.detach()[1:][has_next[:-1]])
    assert torch.equal(targets[last], rewards)


def test_td_lambda_1_is_the_hand_computed_monte_carlo_loss():
    values = torch.tensor([1., 2., 4., 3., 5.])
    lengths, rewards = torch.tensor([3, 2]), torch.tensor([10., -1.])
    loss, td, terminal = bellman_loss(values, lengths, rewards, td_lambda=1.0)
    # every step regressed on its sequence's reward: (1-10)^2 + (2-10)^2 + (4-10)^2 + (3+1)^2 + (5+1)^2 = 233
    assert loss.item() == pytest.approx(233 / 2)
    assert terminal.item() == pytest.approx((36 + 36) / 2)
    assert monte_carlo_error(values, lengths, rewards).item() == pytest.approx(233 / 2)


def test_td_lambda_half_is_the_hand_computed_lambda_return():
    values = torch.tensor([1., 2., 4., 3., 5.])
    lengths, rewards = torch.tensor([3, 2]), torch.tensor([10., -1.])
    # sequence 1: G2 = 10, G1 = .5*4 + .5*10 = 7, G0 = .5*2 + .5*7 = 4.5; sequence 2: G1 = -1, G0 = .5*5 - .5 = 2
    assert lambda_returns(values, lengths, rewards, 0.5).tolist() == [4.5, 7.0, 10.0, 2.0, -1.0]
    loss, td, terminal = bellman_loss(values, lengths, rewards, td_lambda=0.5)
    assert td.item() == pytest.approx(((1 - 4.5) ** 2 + (2 - 7) ** 2 + (3 - 2) ** 2) / 2)
    assert loss.item() == pytest.approx((37.25 + 1 + 72) / 2)


def test_folded_output_affine_is_scale_times_value_plus_shift():
    torch.manual_seed(0)
    model = ValueModel(6, 10, 3)
    x = torch.randn(5, 6)
    folded = fold_output_affine(model, 0.25, -1.5)
    assert torch.allclose(folded(x), model(x) * 0.25 - 1.5, atol=1e-6)
    assert not torch.allclose(folded(x), model(x)), "the original is left as it was"


# ----------------------------------------------------------------------------------------------------------------------
# Training levers end to end: validation slice by prompt, early stopping, standardised rewards

def lever_data(root, m, d):
    """12 prompts x 2 responses of 2-6 steps, d = 8; labels planted as a linear function of the mean state."""
    from utils.features import write_rows
    from utils.io import features_path, save_json, save_tensors
    gen = torch.Generator().manual_seed(3)
    direction = torch.randn(8, generator=gen)
    for split, prompts in (("train", 12), ("test", 4)):
        n = prompts * 2
        lengths = torch.randint(2, 7, (n,), generator=gen)
        mask = torch.arange(6).expand(n, -1) < lengths[:, None]
        rows = torch.randn(int(lengths.sum()), 8, generator=gen)
        offsets = torch.cumsum(lengths, 0) - lengths
        labels = torch.stack([rows[o:o + n_].mean(0) @ direction for o, n_ in zip(offsets, lengths)])
        write_rows(features_path(root, m, d, "token_wise_activations", split), rows.shape[0], 8, torch.float32,
                   [(0, rows)])
        save_tensors(mask, features_path(root, m, d, "mask", split))
        save_tensors(labels * 3 + 5, features_path(root, m, d, "labels", split))
        save_json([{"prompt": f"q{i // 2}", "response": "", "results": ""} for i in range(n)],
                  features_path(root, m, d, "response", split))


def train_args(root, *extra):
    return ["--model_name", "toy-llm", "--dataset_name", "toy", "--lr", "0.01", "--epochs", "12", "--batch_size", "6",
            "--device", "cpu", "--output_dir", root, "--checkpoint_every", "100", *extra]


def test_early_stopping_keeps_the_epoch_with_the_lowest_validation_error(tmp_path):
    import csv

    import train_value_model
    root = str(tmp_path)
    lever_data(root, "toy-llm", "toy")
    stem = os.path.join(root, "trained_model", "vm_es")
    train_value_model.main(train_args(root, "--val_fraction", "0.25", "--early_stopping", "True", "--lr", "0.05",
                                      "--td_lambda", "1", "--value_model", stem))
    rows = list(csv.DictReader(open(stem + "_log.csv")))
    val = [float(r["val_mc"]) for r in rows]
    best_epoch = int(rows[val.index(min(val))]["epoch"])
    assert best_epoch != len(rows), "the planted data over-fits: the best epoch is not the last (the test can fail)"
    saved = json.load(open(stem + ".json"))
    assert saved["epoch"] == best_epoch and saved["val_mc_error"] == pytest.approx(min(val))
    # the saved weights are that epoch's: recompute the validation error from the file (3 of 12 prompts held out)
    from utils.features import load_sequences
    from utils.value_model import monte_carlo_error
    data = load_sequences(root, "toy-llm", "toy", "train")
    records = json.load(open(os.path.join(root, "features", "toy-llm_toy_response_train.json")))
    _, validation = split_by_group(data, [r["prompt"] for r in records], 0.25, 0)
    assert len(validation) == 6 and len({records[i]["prompt"] for i in range(24)}) == 12
    states, lengths, labels = validation.batch(torch.arange(len(validation)))
    with torch.no_grad():
        error = monte_carlo_error(load_value_model(stem)(states), lengths, labels).item()
    assert error == pytest.approx(min(val), rel=1e-5)


def test_validation_slice_holds_out_whole_prompts():
    from utils.features import SequenceData
    records = [{"prompt": f"q{i // 3}"} for i in range(30)]
    data = SequenceData(torch.zeros(30, 2), torch.ones(30, dtype=torch.long), torch.arange(30.0))
    train, validation = split_by_group(data, [r["prompt"] for r in records], 0.2, 0)
    held = {records[int(i)]["prompt"] for i in validation.labels}
    kept = {records[int(i)]["prompt"] for i in train.labels}
    assert len(held) == 2 and not held & kept and len(train) + len(validation) == 30


def test_standardised_rewards_are_saved_in_reward_units(tmp_path):
    """Labels are 3x + 5: a model trained on standardised labels and folded back predicts near 5 on average, not 0."""
    import train_value_model
    from utils.features import load_sequences
    root = str(tmp_path)
    lever_data(root, "toy-llm", "toy")
    stem = os.path.join(root, "trained_model", "vm_std")
    train_value_model.main(train_args(root, "--standardize_rewards", "True", "--td_lambda", "1",
                                      "--value_model", stem))
    data = load_sequences(root, "toy-llm", "toy", "train")
    states, lengths, labels = data.batch(torch.arange(len(data)))
    with torch.no_grad():
        predicted = load_value_model(stem)(states)
    assert abs(predicted.mean().item() - labels.mean().item()) < 0.5 * labels.std().item()
    logged = json.load(open(stem + ".json"))
    assert logged["settings"]["standardize_rewards"] is True


def test_early_stopping_without_a_validation_slice_is_refused(tmp_path):
    import train_value_model
    with pytest.raises(SystemExit) as err:
        train_value_model.parse_args(train_args(str(tmp_path), "--early_stopping", "True"))
    assert err.value.code == 2


def test_stage3_reports_the_tuning_split_where_the_data_set_has_one(tmp_path):
    from utils.configs import ValueModelConfig
    from utils.errors import UsageError
    from utils.io import features_path
    from utils.stages.stage3_value_model import resolve_eval_split, run_train_value_model
    root = str(tmp_path)
    with pytest.raises(UsageError, match="train.safetensors not found; run get_activations_only.py first"):
        run_train_value_model(ValueModelConfig(output_dir=root, dataset_name="demo"))
    os.makedirs(os.path.join(root, "features"))
    open(features_path(root, "smollm2_135M", "demo", "labels", "train"), "w").close()
    with pytest.raises(UsageError, match="demo has a tuning split: run get_activations_only.py --splits tune"):
        run_train_value_model(ValueModelConfig(output_dir=root, dataset_name="demo"))
    assert resolve_eval_split(ValueModelConfig(output_dir=root, dataset_name="toy"), "m", "toy") == "test"
    assert resolve_eval_split(ValueModelConfig(output_dir=root, eval_split="test"), "m", "demo") == "test"
    open(features_path(root, "m", "toy", "labels", "tune"), "w").close()
    assert resolve_eval_split(ValueModelConfig(output_dir=root, dataset_name="toy"), "m", "toy") == "tune"


def test_fingerprint_is_of_the_weights_not_the_file(tmp_path):
    """A deterministic retraining writes the same weights with another wall time in the metadata: same fingerprint."""
    import hashlib

    from utils.value_model import ValueModel, save_value_model, value_model_fingerprint
    torch.manual_seed(0)
    model = ValueModel(8, 4)
    model.config = {"input_dim": 8, "hidden_dim": 4, "num_layers": 2}
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    save_value_model(model, a, seconds=1.0)
    save_value_model(model, b, seconds=2.0)
    digest = [hashlib.sha256(open(s + ".safetensors", "rb").read()).hexdigest() for s in (a, b)]
    assert digest[0] != digest[1] and value_model_fingerprint(a) == value_model_fingerprint(b)
    with torch.no_grad():
        model.net[0].weight[0, 0] += 1e-6
    save_value_model(model, b, seconds=1.0)
    assert value_model_fingerprint(a) != value_model_fingerprint(b)
    assert value_model_fingerprint(str(tmp_path / "missing")) is None
