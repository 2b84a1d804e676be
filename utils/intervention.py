"""Forward hooks on the final norm: capture o_t (stage 1) and edit it uphill on the value model (stage 4).

The hooks sit after the last layer, so the KV cache is never touched: an edit changes only the distribution of the
token being chosen. Only the last position is read or edited; it is the only one whose logits `generate` uses.
"""
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch

from utils.models import find_final_norm
from utils.value_model import value_and_first_delta

GATE_SIGNALS = ("entropy", "value")


@dataclass(frozen=True)
class Gate:
    """Edit only the rows where it matters (Value-Filtered Decoding, CARDS): signal 'entropy' edits a row whose
    next-token entropy (nats, of the unedited state's logits) is above `threshold`; 'value' one whose V(o_t) is below
    it. No gate (None) edits every row, as the paper does."""
    signal: str
    threshold: float

    def __post_init__(self):
        if self.signal not in GATE_SIGNALS:
            raise ValueError(f"gate signal must be one of {', '.join(GATE_SIGNALS)}, not {self.signal!r}")

    def rows(self, weights, states: torch.Tensor, logits_of: Optional[Callable] = None) -> torch.Tensor:
        """The boolean mask of the rows to edit (states in the weights' dtype)."""
        if self.signal == "value":
            first_weight, first_bias = weights[0]
            values, _ = value_and_first_delta(weights, torch.addmm(first_bias, states, first_weight.t()))
            return values < self.threshold
        if logits_of is None:
            raise ValueError("an entropy gate needs the model's logits")
        log_p = torch.log_softmax(logits_of(states).float(), dim=-1)
        return -(log_p.exp() * log_p).sum(-1) > self.threshold


def new_tally() -> Dict[str, int]:
    """A gate's count: rows edited and rows seen (a plain dict, so that a run's record can hold it)."""
    return {"edited": 0, "rows": 0}


def gated_edit(weights, states, step_size, num_updates, gate: Optional[Gate] = None, gram=None,
               logits_of: Optional[Callable] = None, tally: Optional[Dict[str, int]] = None):
    """edit_states on the rows `gate` picks (all of them without a gate: edit_states itself); `tally` counts."""
    if gate is None:
        return edit_states(weights, states, step_size, num_updates, gram=gram)
    rows = gate.rows(weights, states.to(weights[0][0].dtype), logits_of)
    if tally is not None:
        tally["edited"] += int(rows.sum())
        tally["rows"] += int(rows.numel())
    edited = states.clone()
    if rows.any():
        edited[rows] = edit_states(weights, states[rows], step_size, num_updates, gram=gram)
    return edited


def edit_states(weights, states, step_size, num_updates, trace=None, gram=None):
    """num_updates gradient steps uphill on V from `states`, in the weights' dtype; returned in the states' dtype.

    The steps run in the first layer's pre-activation space. With delta_k = dV/d(pre) at step k, the gradient is
    delta_k W1, so x_{k+1} = x_k + a delta_k W1 moves pre by a delta_k (W1 W1^T), and x_n = x_0 + a (sum delta_k) W1:
    one h x h product per update instead of a d x h forward and an h x d backward. `gram` = W1 W1^T, if precomputed.
    `trace`, if a list, receives V before each update and after the last one.
    """
    first_weight, first_bias = weights[0]
    start = states.to(first_weight.dtype)
    gram = first_weight @ first_weight.t() if gram is None else gram
    pre = torch.addmm(first_bias, start, first_weight.t())
    total = torch.zeros_like(pre)
    for _ in range(num_updates):
        values, delta = value_and_first_delta(weights, pre)
        pre = torch.addmm(pre, delta, gram, alpha=step_size)
        total += delta
        if trace is not None:
            trace.append(values)
    if trace is not None:
        trace.append(value_and_first_delta(weights, pre)[0])
    return torch.addmm(start, total, first_weight, alpha=step_size).to(states.dtype)


class FinalNormHook:
    """A forward hook on the model's final norm, active inside `with` and removed when the outermost `with` of this
    hook exits (so nesting and re-entering are safe); register() and remove() do the same by hand."""

    def __init__(self, model: torch.nn.Module):
        self.module = find_final_norm(model)
        self.handle = None
        self.depth = 0

    def _hook(self, _module, _inputs, output):
        raise NotImplementedError

    def register(self) -> "FinalNormHook":
        if self.handle is None:
            self.handle = self.module.register_forward_hook(self._hook)
        return self

    def remove(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None
        self.depth = 0

    def __enter__(self):
        self.depth += 1
        return self.register()

    def __exit__(self, *exc):
        self.depth -= 1
        if self.depth <= 0:
            self.remove()


class ActivationCapture(FinalNormHook):
    """Keeps o_t at the last position of every forward pass: step 0 is the prefill, then one per new token."""

    def __init__(self, model, dtype=None):
        self.dtype = dtype
        self.states = []
        super().__init__(model)

    def _hook(self, _module, _inputs, output):
        self.states.append(output[:, -1, :].detach().to(self.dtype or output.dtype))

    def pop(self):
        """The captured states as [batch, steps, d]; the buffer is emptied for the next batch."""
        states, self.states = torch.stack(self.states, dim=1), []
        return states


class ValueIntervention(FinalNormHook):
    """RE-Control's control signal: u <- u + step_size * dV/do (o_t + u), num_updates times from u = 0.

    The gradient is computed in closed form in float32 (or the model's dtype if wider): a bf16 step of 0.008 on
    coordinates of about 1.2 would round away. Equal to torch.optim.SGD(lr=step_size) on -V(o_t + u).sum().
    """

    def __init__(self, model, value_model, step_size, num_updates, track_values=False, gate=None, tally=None):
        self.step_size = step_size
        self.num_updates = num_updates
        self.value_model = value_model
        self._weights = {}
        self.track_values = track_values
        self.value_trace = []  # per forward pass: [num_updates + 1, batch] values of V along the edit
        self.gate = gate  # a Gate: edit only the rows it picks (None: every row)
        self.tally = tally  # a gate's count (new_tally()), or None
        head = model.get_output_embeddings() if gate is not None and gate.signal == "entropy" else None
        self.logits_of = None if head is None else (lambda x: head(x.to(head.weight.dtype)))
        super().__init__(model)

    def weights(self, dtype, device):
        """The value model's layers cast once per (dtype, device), read again whenever its parameters change (an
        optimizer step bumps their version) or another value model is assigned."""
        version = (id(self.value_model), tuple(p._version for p in self.value_model.parameters()))
        key = (dtype, device)
        if key not in self._weights or self._weights[key][0] != version:
            weights = self.value_model.linear_weights(dtype, device)
            self._weights[key] = version, (weights, weights[0][0] @ weights[0][0].t())
        return self._weights[key][1]

    def edit(self, states):
        work_dtype = torch.promote_types(states.dtype, torch.float32)
        trace = [] if self.track_values else None
        weights, gram = self.weights(work_dtype, states.device)
        if self.gate is not None:
            return gated_edit(weights, states, self.step_size, self.num_updates, self.gate, gram, self.logits_of,
                              self.tally)
        edited = edit_states(weights, states, self.step_size, self.num_updates, trace, gram)
        if trace is not None:
            self.value_trace.append(torch.stack(trace))
        return edited

    @torch.no_grad()
    def _hook(self, _module, _inputs, output):
        output = output.clone()
        output[:, -1, :] = self.edit(output[:, -1, :])
        return output
