"""Training the value model on recorded states: the loop behind stage 3 and `utils.train_value_model`."""
import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from tqdm.auto import tqdm

from utils.configs import ValueTrainingConfig
from utils.errors import UsageError
from utils.features import SequenceData
from utils.value_model import (
    ValueModel,
    bellman_loss,
    fold_output_affine,
    monte_carlo_error,
    preference_margin_loss,
)

LOSS_PARTS = ("loss", "td", "terminal", "mc")


def run_epoch(model: ValueModel, data: SequenceData, config: ValueTrainingConfig, optimizer=None, generator=None,
              scale: float = 1.0, shift: float = 0.0) -> List[float]:
    """Mean per-sequence (loss, td, terminal, Monte-Carlo error) over `data`; one optimizer step per batch if
    training. The model's output is read as scale * V + shift (reward standardisation)."""
    margin = config.margin_weight > 0 and data.groups is not None
    order = torch.randperm(len(data), generator=generator) if optimizer else torch.arange(len(data))
    if margin and optimizer:  # a prompt's responses in one batch: its best and worst are a pair
        groups = data.groups.unique()
        rank = torch.empty_like(groups)
        rank[torch.randperm(groups.numel(), generator=generator)] = torch.arange(groups.numel())
        order = order[torch.argsort(rank[torch.searchsorted(groups, data.groups[order])], stable=True)]
    totals = torch.zeros(len(LOSS_PARTS))
    for start in range(0, len(data), config.batch_size):
        ids = order[start:start + config.batch_size]
        states, lengths, rewards = data.batch(ids)
        lengths, rewards = lengths.to(config.device), rewards.to(config.device)
        with torch.set_grad_enabled(optimizer is not None):
            values = model(states.to(config.device))
            if (scale, shift) != (1.0, 0.0):
                values = values * scale + shift
            parts = bellman_loss(values, lengths, rewards, config.detach_target, config.td_lambda)
            if margin:
                parts = (parts[0] + config.margin_weight * preference_margin_loss(
                    values, lengths, rewards, data.groups[ids].to(config.device), config.margin), *parts[1:])
        if optimizer:
            optimizer.zero_grad()
            parts[0].backward()
            optimizer.step()
        parts = [p.item() for p in parts] + [monte_carlo_error(values.detach(), lengths, rewards).item()]
        totals += torch.tensor(parts) * len(ids)
    return (totals / len(data)).tolist()


def with_prompt_groups(data: SequenceData, prompts: Sequence[str]) -> SequenceData:
    """`data` with each sequence's prompt as a group id (the margin loss pairs a prompt's responses)."""
    codes = {p: i for i, p in enumerate(dict.fromkeys(prompts))}
    return dataclasses.replace(data, groups=torch.tensor([codes[p] for p in prompts]))


def split_by_group(data: SequenceData, groups: Sequence[str], fraction: float,
                   seed: int) -> Tuple[SequenceData, SequenceData]:
    """(train, validation): a seeded `fraction` of the distinct groups (prompts), with all their sequences, held out."""
    names = sorted(set(groups))
    held = int(round(fraction * len(names)))
    if held < 1 or held >= len(names):
        raise UsageError(f"--val_fraction {fraction} of {len(names)} training prompts leaves an empty slice; "
                         f"choose a fraction that holds out at least one prompt and keeps one")
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(seed)).tolist()
    validation = {names[i] for i in order[:held]}
    is_val = torch.tensor([g in validation for g in groups])
    return data.subset(torch.nonzero(~is_val).squeeze(1)), data.subset(torch.nonzero(is_val).squeeze(1))


@dataclass
class TrainingResult:
    model: ValueModel   # the kept epoch's model, in reward units
    log: List[dict]     # one row per epoch: {split}_{loss, td, terminal, mc}
    kept: dict          # the log row of the kept epoch


def fit_value_model(train: SequenceData, config: ValueTrainingConfig, validation: Optional[SequenceData] = None,
                    eval_sets: Optional[Dict[str, SequenceData]] = None,
                    on_epoch: Optional[Callable[[int, Callable[[], ValueModel], dict], None]] = None,
                    progress: bool = False) -> TrainingResult:
    """Train a ValueModel on `train`; with config.early_stopping keep the epoch with the lowest Monte-Carlo error on
    `validation` (held-out prompts: split_by_group), else the last.

    eval_sets: splits whose losses are logged every epoch (never used for a choice). on_epoch(epoch, current, row)
    runs after each epoch; current() gives the model in reward units (for checkpoints).
    """
    if config.early_stopping and validation is None:
        raise UsageError("early stopping needs a validation slice: set val_fraction (e.g. 0.1)")
    if config.margin_weight and train.groups is None:
        raise UsageError("the margin loss pairs each prompt's responses: give the training data its prompts "
                         "(utils.training.with_prompt_groups)")
    torch.manual_seed(config.seed)
    scale, shift = 1.0, 0.0
    if config.standardize_rewards:
        shift, scale = train.labels.mean().item(), train.labels.std().item() or 1.0
    model = ValueModel(train.dim, config.hidden_dim or train.dim, config.num_layers).to(config.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    evaluated = dict(eval_sets or {}, **({"val": validation} if validation is not None else {}))
    log, best = [], None
    for epoch in tqdm(range(1, config.epochs + 1), desc="epochs", disable=not progress):
        model.train()
        splits = {"train": run_epoch(model, train, config, optimizer, generator, scale, shift)}
        model.eval()
        for name, data in evaluated.items():
            splits[name] = run_epoch(model, data, config, scale=scale, shift=shift)
        if not all(math.isfinite(x) for parts in splits.values() for x in parts):
            raise UsageError(f"the loss became NaN or inf at epoch {epoch}; lower --lr or check the features")
        log.append(dict(epoch=epoch, **{f"{split}_{k}": v for split, parts in splits.items()
                                        for k, v in zip(LOSS_PARTS, parts)}))
        if config.early_stopping and (best is None or log[-1]["val_mc"] < best[0]["val_mc"]):
            best = log[-1], fold_output_affine(model, scale, shift)
        if on_epoch:
            on_epoch(epoch, lambda: fold_output_affine(model, scale, shift), log[-1])
    kept, final = best if best else (log[-1], fold_output_affine(model, scale, shift))
    return TrainingResult(final.eval(), log, kept)
