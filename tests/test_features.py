"""Feature storage: the streamed safetensors writer and reader, and the original padded .pth layout still training."""
import os

import pytest
import torch
from safetensors import safe_open

import train_value_model
from utils.errors import UsageError
from utils.features import FeatureFile, SequenceData, load_sequences, write_rows
from utils.io import features_path, save_tensors

M, D = "toy-llm", "toy"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_rows_written_in_any_order_read_back_exactly(tmp_path, dtype):
    torch.manual_seed(0)
    rows = torch.randn(11, 6).to(dtype)
    path = str(tmp_path / "f.safetensors")
    write_rows(path, 11, 6, dtype, [(7, rows[7:]), (0, rows[:3]), (3, rows[3:7])], {"llm": "x"})
    with safe_open(path, framework="pt") as f:  # a standard safetensors file
        assert torch.equal(f.get_tensor("features"), rows) and f.metadata() == {"llm": "x"}
    file = FeatureFile(path)
    assert file.shape == (11, 6) and file.dtype == dtype
    assert torch.equal(file.read([(9, 2), (0, 1), (4, 3)]), torch.cat([rows[9:11], rows[:1], rows[4:7]]))
    assert file.read([]).shape == (0, 6)


def test_truncated_feature_file_is_refused(tmp_path):
    path = str(tmp_path / "f.safetensors")
    write_rows(path, 4, 3, torch.float16, [(0, torch.ones(4, 3))])
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 2)
    with pytest.raises(UsageError, match="truncated"):
        FeatureFile(path)


def synthetic_split(root, split, n, layout, seed):
    """n responses of up to 5 steps, d = 8; layout 'packed' (ours) or 'padded' (the original [N, T, d] float32)."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 6, (n,), generator=gen)
    mask = torch.arange(5).expand(n, -1) < lengths[:, None]
    padded = torch.randn(n, 5, 8, generator=gen) * mask[..., None]
    labels = torch.rand(n, generator=gen)
    path = features_path(root, M, D, "token_wise_activations", split)
    if layout == "packed":
        write_rows(path, int(mask.sum()), 8, torch.float32, [(0, padded[mask])])
    else:
        save_tensors(padded, path.removesuffix(".safetensors") + ".pth")
    save_tensors(mask, features_path(root, M, D, "mask", split))
    save_tensors(labels, features_path(root, M, D, "labels", split))
    return padded, mask, labels


def test_original_padded_pth_loads_as_the_same_sequences(tmp_path):
    padded, mask, labels = synthetic_split(str(tmp_path / "a"), "train", 7, "padded", 0)
    synthetic_split(str(tmp_path / "b"), "train", 7, "packed", 0)
    old = load_sequences(str(tmp_path / "a"), M, D, "train")
    new = load_sequences(str(tmp_path / "b"), M, D, "train")
    ids = torch.tensor([5, 0, 3])
    for a, b in zip(old.batch(ids), new.batch(ids)):
        assert torch.equal(a, b)
    features, lengths, _ = new.batch(ids)
    assert torch.equal(features, torch.cat([padded[i][mask[i]] for i in ids]))
    assert isinstance(new.rows, FeatureFile), "ours is read from disk, not loaded whole"


def test_train_value_model_reads_the_original_padded_layout(tmp_path):
    """The same data in the original layout (padded float32 .pth) and in ours trains the same value model."""
    weights = []
    for layout in ("padded", "packed"):
        root = str(tmp_path / layout)
        synthetic_split(root, "train", 9, layout, 1)
        synthetic_split(root, "test", 4, layout, 2)
        train_value_model.main(["--model_name", M, "--dataset_name", D, "--lr", "0.01", "--epochs", "2",
                                "--batch_size", "4", "--device", "cpu", "--output_dir", root])
        from utils.value_model import load_value_model
        folder = os.path.join(root, "trained_model", f"value_model_{M}_{D}_0.01_ep2_bs4")
        weights.append(load_value_model(folder).state_dict())
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


def test_nan_features_are_refused(tmp_path):
    root = str(tmp_path)
    padded, mask, labels = synthetic_split(root, "train", 3, "packed", 0)
    rows = padded[mask]
    rows[2, 1] = float("nan")
    write_rows(features_path(root, M, D, "token_wise_activations", "train"), rows.shape[0], 8, torch.float32,
               [(0, rows)])
    with pytest.raises(UsageError, match="the features contain NaN or inf"):
        load_sequences(root, M, D, "train")  # a streamed check before any training
    data = SequenceData(FeatureFile(features_path(root, M, D, "token_wise_activations", "train")), mask.sum(1),
                        labels)
    with pytest.raises(UsageError, match="NaN or inf"):
        data.batch(torch.arange(3))  # and per batch


def test_sequence_data_batches_cover_every_sequence_once():
    data = SequenceData(torch.arange(12.0).view(6, 2), torch.tensor([1, 2, 3]), torch.tensor([0.1, 0.2, 0.3]))
    batches = list(data.batches(2))
    assert [b[1].tolist() for b in batches] == [[1, 2], [3]]
    assert torch.equal(torch.cat([b[0] for b in batches]), torch.arange(12.0).view(6, 2))
