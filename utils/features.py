"""Stage-1 features with their stage-2 labels: valid steps stored back to back, read from disk a batch at a time.

Stage 1 writes features/{m}_{d}_token_wise_activations_{split}.safetensors: one tensor "features" [valid steps, d]
in half precision, sequence after sequence. It is written row block by row block and read with positioned reads,
so neither stage holds the whole file in memory. The original repository's .pth files (padded [N, T, d], float32)
still load, whole, as they always did.
"""
import json
import os
import struct
from dataclasses import dataclass

import torch

from utils.errors import UsageError
from utils.io import atomic_path, features_path, load_tensors

SAFETENSORS_DTYPES = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.float64: "F64",
                      torch.int64: "I64", torch.int32: "I32", torch.bool: "BOOL", torch.uint8: "U8"}
TORCH_DTYPES = {v: k for k, v in SAFETENSORS_DTYPES.items()}


def save_safetensors(tensors, path, metadata=None):
    """Serialized in memory and written by Python, so a failed write is an OSError like any other."""
    from safetensors.torch import save
    data = save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_rows(path, rows, dim, dtype, blocks, metadata=None):
    """A safetensors file holding one tensor "features" [rows, dim], written from (first row, block) pairs.

    Only one block is in memory at a time; blocks may come in any order.
    """
    row_bytes = dim * torch.empty(0, dtype=dtype).element_size()
    header = {"features": {"dtype": SAFETENSORS_DTYPES[dtype], "shape": [rows, dim],
                           "data_offsets": [0, rows * row_bytes]}}
    if metadata:
        header["__metadata__"] = metadata
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    start = 8 + len(encoded)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(encoded)) + encoded)
            f.truncate(start + rows * row_bytes)
            for first, block in blocks:
                f.seek(start + first * row_bytes)
                f.write(block.to(dtype).contiguous().view(torch.uint8).numpy().tobytes())


class FeatureFile:
    """Rows of a one-tensor safetensors file, read from disk on demand (memory bounded by what is asked for)."""

    def __init__(self, path):
        self.path = path
        try:
            with open(path, "rb") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                if length > os.path.getsize(path) - 8:
                    raise ValueError("header longer than the file")
                header = json.loads(f.read(length))
            info = header["features"]
            self.dtype = TORCH_DTYPES[info["dtype"]]
            self.shape = torch.Size(info["shape"])
            if len(self.shape) != 2:
                raise ValueError(f"shape {list(self.shape)}")
            self.start = 8 + length + info["data_offsets"][0]
        except (OSError, ValueError, KeyError, TypeError, struct.error) as err:
            raise UsageError(f"cannot read {path} as a features file ({type(err).__name__}); re-create it with "
                             f"get_activations_only.py")
        self.row_bytes = self.shape[1] * torch.empty(0, dtype=self.dtype).element_size()
        if os.path.getsize(path) < self.start + self.shape[0] * self.row_bytes:
            raise UsageError(f"{path} is truncated; re-create it with get_activations_only.py")

    def read(self, ranges):
        """Rows [first, first + count) for each (first, count), back to back."""
        total = sum(count for _, count in ranges)
        buffer = bytearray(total * self.row_bytes)
        view = memoryview(buffer)
        with open(self.path, "rb") as f:
            offset = 0
            for first, count in ranges:
                f.seek(self.start + first * self.row_bytes)
                f.readinto(view[offset:offset + count * self.row_bytes])
                offset += count * self.row_bytes
        return torch.frombuffer(buffer, dtype=self.dtype).view(total, self.shape[1]) if total else \
            torch.empty(0, self.shape[1], dtype=self.dtype)


class TensorRows:
    """The same reading interface over a tensor already in memory (the .pth layouts)."""

    def __init__(self, tensor):
        self.tensor, self.shape = tensor, tensor.shape

    def read(self, ranges):
        if not ranges:
            return self.tensor[:0]
        return torch.cat([self.tensor[first:first + count] for first, count in ranges])


@dataclass
class SequenceData:
    rows: object            # FeatureFile or TensorRows: [sum(lengths), d]
    lengths: torch.Tensor   # [N] valid steps per sequence
    labels: torch.Tensor    # [N] reward of each sequence
    offsets: torch.Tensor = None  # [N] first row of each sequence (default: back to back from row 0)
    groups: torch.Tensor = None   # [N] the prompt of each sequence (an id), where known

    def __post_init__(self):
        if isinstance(self.rows, torch.Tensor):
            self.rows = TensorRows(self.rows)
        if self.offsets is None:
            self.offsets = torch.cumsum(self.lengths, 0) - self.lengths

    def subset(self, sequence_ids):
        """The sequences `sequence_ids` (a LongTensor), reading the same rows."""
        return SequenceData(self.rows, self.lengths[sequence_ids], self.labels[sequence_ids],
                            self.offsets[sequence_ids], None if self.groups is None else self.groups[sequence_ids])

    def __len__(self):
        return self.lengths.numel()

    @property
    def dim(self):
        return self.rows.shape[1]

    @property
    def num_steps(self):
        return int(self.lengths.sum())

    def batch(self, sequence_ids):
        """(float32 features of the sequences' valid steps back to back, their lengths, their labels)."""
        ranges = list(zip(self.offsets[sequence_ids].tolist(), self.lengths[sequence_ids].tolist()))
        features = self.rows.read(ranges).float()
        if not torch.isfinite(features).all():
            raise UsageError(f"the features contain NaN or inf (sequences {sequence_ids[:3].tolist()}...); "
                             f"re-run get_activations_only.py (a float16 overflow: try --feature_dtype float32)")
        return features, self.lengths[sequence_ids], self.labels[sequence_ids]

    def check_finite(self, name, rows_per_read=8192):
        """One streamed pass: refuse NaN or inf before any training starts."""
        total = self.rows.shape[0]
        for first in range(0, total, rows_per_read):
            block = self.rows.read([(first, min(rows_per_read, total - first))])
            if not torch.isfinite(block).all():
                raise UsageError(f"{name}: the features contain NaN or inf (rows from {first}); re-run "
                                 f"get_activations_only.py (a float16 overflow: try --feature_dtype float32)")

    def batches(self, batch_size):
        for start in range(0, len(self), batch_size):
            yield self.batch(torch.arange(start, min(start + batch_size, len(self))))


def load_features(root, m, d, split):
    """Stage-1 features of a split: ours (safetensors), else the original repository's .pth (padded or packed)."""
    path = features_path(root, m, d, "token_wise_activations", split)
    if os.path.exists(path):
        return FeatureFile(path)
    original = path.removesuffix(".safetensors") + ".pth"
    if os.path.exists(original):
        return load_tensors(original, "get_activations_only.py", mmap=True)
    raise UsageError(f"{path} not found; run get_activations_only.py first (with the same --model_name, "
                     f"--dataset_name and --output_dir)")


def load_sequences(root, m, d, split):
    """Features, masks and labels of one split, checked against each other."""
    stage1 = "get_activations_only.py"
    features = load_features(root, m, d, split)
    mask_path, labels_path = features_path(root, m, d, "mask", split), features_path(root, m, d, "labels", split)
    mask = load_tensors(mask_path, stage1)
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        raise UsageError(f"{mask_path} is not a mask (a 2-D tensor of valid steps); re-run {stage1}")
    mask = mask.bool()
    labels = load_tensors(labels_path, f"reward_label.py --mode {split}")
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.is_complex():
        raise UsageError(f"{labels_path}: the labels are not a 1-D tensor of rewards; re-run reward_label.py "
                         f"--mode {split}")
    labels = labels.float()
    if isinstance(features, torch.Tensor) and features.dim() == 3:  # the original padded layout [N, T, d]
        if features.shape[:2] != mask.shape:
            raise UsageError(f"{split}: features {tuple(features.shape)} and mask {tuple(mask.shape)} disagree; "
                             f"re-run get_activations_only.py")
        features = features[mask]
    lengths = mask.sum(1)
    if features.shape[0] != int(lengths.sum()):
        raise UsageError(f"{split}: {features.shape[0]} feature rows but the mask has {int(lengths.sum())} valid "
                         f"steps; re-run get_activations_only.py")
    if labels.numel() != lengths.numel():
        raise UsageError(f"{split}: {labels.numel()} labels for {lengths.numel()} responses; re-run "
                         f"reward_label.py --mode {split} after get_activations_only.py")
    if (lengths == 0).any():
        raise UsageError(f"{split}: a response has no valid step; re-run get_activations_only.py")
    if not torch.isfinite(labels).all():
        raise UsageError(f"{split}: the labels contain NaN or inf; check the reward model and re-run reward_label.py")
    data = SequenceData(features, lengths, labels)
    data.check_finite(split)
    return data
