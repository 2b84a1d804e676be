"""The value model: an MLP V(o) on final-layer hidden states, its Bellman (TD(0)) loss, and self-describing files."""
import copy
import glob
import json
import os

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from utils.errors import UsageError
from utils.io import atomic_path, file_sha256, load_tensors, save_json
from utils.names import VARIANT, value_model_stem, value_model_tag


class ValueModel(nn.Module):
    """Linear(d, h) - ReLU - [Linear(h, h) - ReLU] - Linear(h, 1): num_layers counts the Linear layers (2 or 3)."""

    def __init__(self, input_dim, hidden_dim, num_layers=2):
        super().__init__()
        if num_layers < 2:
            raise UsageError(f"--num_layers must be 2 or more, got {num_layers}")
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [1]
        layers = []
        for i in range(num_layers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < num_layers - 1:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)
        self.config = {"input_dim": input_dim, "hidden_dim": hidden_dim, "num_layers": num_layers}

    def forward(self, states):
        return self.net(states).squeeze(-1)

    def linear_weights(self, dtype=None, device=None):
        """[(W, b), ...] detached and cast once: what the closed-form gradient uses at every decoding step."""
        return [(m.weight.detach().to(device=device, dtype=dtype), m.bias.detach().to(device=device, dtype=dtype))
                for m in self.net if isinstance(m, nn.Linear)]


def value_and_first_delta(weights, pre):
    """V and dV/d(pre) from the first layer's pre-activation `pre` = states W1^T + b1 (weights: all the layers)."""
    pre_activations = [pre]
    activation = torch.relu(pre)
    for weight, bias in weights[1:-1]:
        pre_activations.append(torch.addmm(bias, activation, weight.t()))
        activation = torch.relu(pre_activations[-1])
    out_weight, out_bias = weights[-1]
    values = torch.addmm(out_bias, activation, out_weight.t()).squeeze(-1)
    delta = out_weight.expand(pre.shape[0], -1)
    for (weight, _), later in zip(reversed(weights[1:-1]), reversed(pre_activations[1:])):
        delta = (delta * (later > 0)) @ weight
    return values, delta * (pre > 0)


def value_and_gradient(weights, states):
    """V(states) and dV/dstates for a ReLU MLP, in closed form (no autograd graph): one forward, one backward."""
    first_weight, first_bias = weights[0]
    values, delta = value_and_first_delta(weights, torch.addmm(first_bias, states, first_weight.t()))
    return values, delta @ first_weight


# ----------------------------------------------------------------------------------------------------------------------
# Bellman loss on packed sequences

def lambda_returns(values, lengths, rewards, td_lambda):
    """The TD(lambda) target of every valid step, undiscounted, with the reward at the end.

    G_T = r at the last valid step T; before it G_t = (1 - lambda) V(o_{t+1}) + lambda G_{t+1}. lambda = 0 gives
    V(o_{t+1}) (TD(0), the paper); lambda = 1 gives r at every step (the Monte-Carlo target).
    """
    batch, longest = lengths.numel(), int(lengths.max())
    valid = torch.arange(longest, device=lengths.device) < lengths[:, None]
    padded = values.new_zeros(batch, longest).masked_scatter(valid, values)
    targets = torch.empty_like(padded)
    target = rewards.to(values.dtype)
    for t in reversed(range(longest)):
        if t + 1 < longest:
            bootstrapped = (1 - td_lambda) * padded[:, t + 1] + td_lambda * target
            target = torch.where(t + 1 < lengths, bootstrapped, target)
        target = torch.where(t == lengths - 1, rewards.to(values.dtype), target)
        targets[:, t] = target
    return targets[valid]


def bellman_loss(values, lengths, rewards, detach_target=True, td_lambda=0.0):
    """TD(lambda) without discount over a batch of B sequences stored back to back (lambda = 0: the paper's TD(0)).

    values: V(o) for every valid step, sequence after sequence ([sum(lengths)]); lengths: valid steps per sequence;
    rewards: the reward-model label of each sequence. Returns (loss, td_part, terminal_part), each summed over the
    batch and divided by B. For TD(0): sum_t (V(o_t) - V(o_{t+1}))^2 + (V(o_T) - r)^2 with T the LAST valid step;
    otherwise every step before T is regressed on its lambda-return (lambda_returns).
    """
    last = torch.cumsum(lengths, 0) - 1
    has_next = torch.ones_like(values, dtype=torch.bool)
    has_next[last] = False
    if td_lambda == 0:
        current = values[:-1][has_next[:-1]]
        target = values[1:][has_next[:-1]]
    else:
        current = values[has_next]
        target = lambda_returns(values, lengths, rewards, td_lambda)[has_next]
    if detach_target:
        target = target.detach()
    batch = lengths.numel()
    td = ((current - target) ** 2).sum() / batch
    terminal = ((values[last] - rewards) ** 2).sum() / batch
    return td + terminal, td, terminal


def preference_margin_loss(values, lengths, rewards, groups, margin):
    """Pref-CTRL's preference margin: for each prompt (`groups`, one id per sequence) with two or more responses of
    different rewards, relu(margin - (mean V over the best response's steps - mean V over the worst's)); the mean over
    those prompts (0 if there are none). `values` as bellman_loss reads them: every valid step, back to back."""
    sequence = torch.repeat_interleave(torch.arange(lengths.numel(), device=values.device), lengths)
    means = values.new_zeros(lengths.numel()).index_add(0, sequence, values) / lengths.to(values.dtype)
    terms = []
    for group in groups.unique():
        members = torch.nonzero(groups == group).squeeze(1)
        best, worst = members[rewards[members].argmax()], members[rewards[members].argmin()]
        if members.numel() >= 2 and rewards[best] != rewards[worst]:
            terms.append(torch.relu(margin - (means[best] - means[worst])))
    return torch.stack(terms).mean() if terms else values.sum() * 0


def monte_carlo_error(values, lengths, rewards):
    """sum over every valid step of (V(o_t) - r)^2, divided by B: how well V predicts the final reward anywhere.

    Independent of the training target, so it compares value models trained with any lambda (early stopping).
    """
    return ((values - torch.repeat_interleave(rewards, lengths)) ** 2).sum() / lengths.numel()


def fold_output_affine(model, scale, shift):
    """A copy of `model` whose output is scale * V + shift, folded into its last Linear layer (files stay plain)."""
    folded = copy.deepcopy(model)
    last = [m for m in folded.net if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(scale)
        last.bias.mul_(scale).add_(shift)
    return folded


def pack_padded(features, mask):
    """Original layout ([N, T, d] features, [N, T] mask) -> valid rows back to back, and the lengths."""
    mask = mask.bool()
    return features[mask], mask.sum(1)


# ----------------------------------------------------------------------------------------------------------------------
# Files: weights in safetensors, the description in its metadata and in a JSON beside it

def save_value_model(model, stem, **description):
    config = dict(model.config, **description)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(stem + ".safetensors") as tmp:
        save_file(state, tmp, metadata={"config": json.dumps(config)})
    save_json(config, stem + ".json")


def load_value_model(stem):
    """From `stem`.safetensors (with its architecture), else the original repository's `stem`.pth state dict."""
    if os.path.exists(stem + ".safetensors"):
        try:
            with safe_open(stem + ".safetensors", framework="pt") as f:
                config = json.loads((f.metadata() or {}).get("config", "{}"))
            state = load_file(stem + ".safetensors")
        except (SafetensorError, OSError, ValueError) as err:
            raise UsageError(f"cannot read {stem}.safetensors as a value model ({type(err).__name__}: damaged or "
                             f"cut short); re-create it with train_value_model.py")
    elif os.path.exists(stem + ".pth"):
        state = load_tensors(stem + ".pth", "train_value_model.py")
        config = {}
    else:
        raise UsageError(f"value model {stem}.safetensors not found; run train_value_model.py with the same "
                         f"--model_name, --dataset_name and --lr (= --value_lr here) first")
    path = stem + (".safetensors" if os.path.exists(stem + ".safetensors") else ".pth")
    if not isinstance(state, dict) or not isinstance(config, dict):
        raise UsageError(f"{path}: not a value model (no weights); re-create it with train_value_model.py")
    weights = [v for k, v in state.items() if k.endswith("weight") and isinstance(v, torch.Tensor) and v.dim() == 2]
    if not weights:
        raise UsageError(f"{path} holds no value-model weights (a file of another kind?); pass a value model "
                         f"written by train_value_model.py")
    if not config:  # infer the architecture of an original checkpoint from its weight shapes
        config = {"input_dim": weights[0].shape[1], "hidden_dim": weights[0].shape[0], "num_layers": len(weights)}
    model = ValueModel(config["input_dim"], config["hidden_dim"], config["num_layers"])
    biases = [v for k, v in state.items() if k.endswith("bias")]
    linears = [m for m in model.net if isinstance(m, nn.Linear)]
    if len(linears) != len(weights) or len(biases) != len(weights) or any(
            linear.weight.shape != weight.shape or linear.bias.shape != bias.shape
            for linear, weight, bias in zip(linears, weights, biases)):
        raise UsageError(f"{path}: weights do not match a {config['num_layers']}-layer value model; re-create it "
                         f"with train_value_model.py")
    with torch.no_grad():
        for linear, weight, bias in zip(linears, weights, biases):
            linear.weight.copy_(weight)
            linear.bias.copy_(bias)
    model.config = config
    return model.eval()


def value_model_file(stem):
    """The file a value model is read from: stem.safetensors, else the original's stem.pth (None if neither)."""
    for path in (stem + ".safetensors", stem + ".pth"):
        if os.path.exists(path):
            return path
    return None


def value_model_fingerprint(stem):
    """The sha256 of the value model's weights (names, dtypes, shapes and bytes; None if it does not exist yet): what
    a sweep chose its setting for, and what stage 4 read. The file's own hash would not do: its metadata holds the
    training's wall time, so a deterministic retraining writes the same weights in a different file."""
    import hashlib
    path = value_model_file(stem)
    if path is None:
        return None
    if path.endswith(".safetensors"):
        try:
            state = load_file(path)
        except (SafetensorError, OSError, ValueError):
            return file_sha256(path)  # damaged: load_value_model says so in one line
    else:
        state = load_tensors(path, "train_value_model.py")
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def find_value_model(root, m, d, value_lr, path=None):
    """(stem, tag) of the value model a stage uses: `path` if given, else the one stage 3 wrote for `value_lr`
    under the original name or a variant's (value_model_{m}_{d}_{value_lr}[_variant]); several are refused."""
    if path:
        stem = path.removesuffix(".safetensors").removesuffix(".pth")
        return stem, value_model_tag(stem, m, d)
    default = value_model_stem(root, m, d, value_lr)
    stems = sorted({p.rsplit(".", 1)[0] for p in glob.glob(glob.escape(default) + "*")
                    if p.endswith((".safetensors", ".pth"))})
    stems = [s for s in stems if s == default or VARIANT.fullmatch(s[len(default):])]
    if len(stems) > 1:
        raise UsageError(f"{len(stems)} value models for --value_lr {value_lr}: "
                         f"{', '.join(os.path.basename(s) for s in stems)}; pass --value_model PATH to choose one")
    stem = stems[0] if stems else default  # missing: load_value_model says how to make it
    return stem, value_model_tag(stem, m, d)


def check_value_model(value_model, model_name, hidden):
    """Refuse a value model trained on another LLM's states (or on states of another size)."""
    config = value_model.config
    if hidden is not None and config["input_dim"] != hidden:
        raise UsageError(f"the value model reads {config['input_dim']}-dim states but {model_name} has {hidden}; "
                         f"train one on this model's features (train_value_model.py)")
    trained_on = config.get("llm")
    if trained_on and trained_on != model_name:
        raise UsageError(f"the value model was trained on {trained_on}'s states, not {model_name}'s; "
                         f"train one for this model or pass the matching --model_name")
