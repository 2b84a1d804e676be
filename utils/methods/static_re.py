"""Static representation editing (the paper's Static RE baseline): one fixed control vector, strength x the unit
direction of a linear probe that predicts the reward from the training split's states, added to o_t at every step."""
import contextlib
from dataclasses import dataclass

import torch

from utils.config import nonnegative_float, option
from utils.decoding import DecodingMethod, register
from utils.errors import UsageError
from utils.intervention import FinalNormHook


def linear_probe_direction(data, ridge=1e-2, batch_size=512):
    """Unit direction of a ridge regression predicting each sequence's reward from every valid step's o_t.

    Accumulated over batches of sequences read from disk (float64 sums), so the features never sit in memory whole.
    """
    dim = data.dim
    count, target_sum = 0, 0.0
    feature_sum, cross = torch.zeros(dim, dtype=torch.float64), torch.zeros(dim, dtype=torch.float64)
    gram = torch.zeros(dim, dim, dtype=torch.float64)
    for features, lengths, labels in data.batches(batch_size):
        features, targets = features.double(), torch.repeat_interleave(labels, lengths).double()
        count += features.shape[0]
        feature_sum += features.sum(0)
        target_sum += targets.sum().item()
        gram += features.T @ features
        cross += features.T @ targets
    mean = feature_sum / count
    centred_gram = gram - count * torch.outer(mean, mean)
    centred_cross = cross - mean * target_sum
    weights = torch.linalg.solve(centred_gram + ridge * count * torch.eye(dim, dtype=torch.float64), centred_cross)
    if not torch.isfinite(weights).all() or weights.norm() == 0:
        raise UsageError("the training rewards do not vary (or the features are constant): a linear probe has no "
                         "direction to steer along; label more varied responses (more prompts or --num_samples)")
    return (weights / weights.norm()).float()


class StaticIntervention(FinalNormHook):
    """o_t <- o_t + strength * direction at the last position of every forward pass."""

    def __init__(self, model, direction, strength):
        self.direction = direction
        self.strength = strength
        super().__init__(model)

    @torch.no_grad()
    def _hook(self, _module, _inputs, output):
        output = output.clone()
        work_dtype = torch.promote_types(output.dtype, torch.float32)  # as in the RE-Control edit
        shift = self.strength * self.direction.to(device=output.device, dtype=work_dtype)
        output[:, -1, :] = (output[:, -1, :].to(work_dtype) + shift).to(output.dtype)
        return output




@dataclass(frozen=True)
class StaticREOptions:
    strength: float = option(4.0, "static_re: length of the control vector added to o_t", parse=nonnegative_float)


class StaticRE(DecodingMethod):
    name, label, Options, engines = "static_re", "Static RE", StaticREOptions, ("hf",)
    uses_probe = True
    tuned, sweep_flags = ("strength",), {"strength": "strengths"}

    def run_part(self, options, _value_tag):
        return f"static_re_{options.strength}"

    @contextlib.contextmanager
    def session(self, resources, options):
        engine = resources.engine
        with StaticIntervention(engine.model, resources.probe_direction(), options.strength):
            yield lambda texts, _conversations: engine.decode(texts, resources.max_new_tokens)


register(StaticRE())
