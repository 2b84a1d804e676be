"""Stage-1 features with their stage-2 labels, as sequences of valid steps stored back to back."""
from dataclasses import dataclass

import torch

from utils.cli import UsageError
from utils.io import features_path, load_tensors


@dataclass
class SequenceData:
    features: torch.Tensor  # [sum(lengths), d], memory-mapped when read from the packed layout
    lengths: torch.Tensor   # [N] valid steps per sequence
    labels: torch.Tensor    # [N] reward of each sequence

    def __post_init__(self):
        self.offsets = torch.cumsum(self.lengths, 0) - self.lengths

    def __len__(self):
        return self.lengths.numel()

    @property
    def dim(self):
        return self.features.shape[1]

    def batch(self, sequence_ids):
        """(features of the sequences' valid steps back to back, their lengths, their labels)."""
        lengths = self.lengths[sequence_ids]
        starts = torch.repeat_interleave(self.offsets[sequence_ids], lengths)
        within = torch.arange(int(lengths.sum())) - torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths,
                                                                            lengths)
        return self.features[starts + within].float(), lengths, self.labels[sequence_ids]


def load_sequences(root, m, d, split):
    """Features, masks and labels of one split, checked against each other."""
    stage1 = "get_activations_only.py"
    features = load_tensors(features_path(root, m, d, "token_wise_activations", split), stage1, mmap=True)
    mask = load_tensors(features_path(root, m, d, "mask", split), stage1).bool()
    labels = load_tensors(features_path(root, m, d, "labels", split), f"reward_label.py --mode {split}").float()
    if features.dim() == 3:  # the original padded layout [N, T, d]
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
    return SequenceData(features, lengths, labels)
