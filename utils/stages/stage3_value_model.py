"""Stage 3: train the value model on the stage-1 features and stage-2 labels (see train_value_model.py)."""
import dataclasses
import os
import time

from tqdm.auto import tqdm

from utils.config import as_dict
from utils.data import has_tuning_split
from utils.errors import UsageError
from utils.features import load_sequences
from utils.io import features_path, load_json, new_figure, peak_memory_mb, run_settings, save_csv, save_figure
from utils.models import resolve_device
from utils.names import model_tag, named_dataset, value_model_stem, value_model_variant
from utils.paper import default_shape
from utils.runs import refuse_overwrite
from utils.training import ValueTrainingConfig, fit_value_model, split_by_group, with_prompt_groups
from utils.value_model import save_value_model


def plot_losses(rows, path, baseline, split="test"):
    fig, ax = new_figure(figsize=(6, 4))
    epochs = [r["epoch"] for r in rows]
    ax.plot(epochs, [r["train_loss"] for r in rows], label="train")
    ax.plot(epochs, [r["test_loss"] for r in rows], label=split)
    ax.plot(epochs, [r["test_terminal"] for r in rows], "--", label=f"{split}, terminal part")
    if "val_mc" in rows[0]:
        ax.plot(epochs, [r["val_mc"] for r in rows], label="validation, Monte-Carlo error")
    ax.axhline(baseline, color="gray", linestyle=":", label="terminal part of predicting the mean reward")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss per sequence")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("value model training")
    save_figure(fig, path)


def resolve_eval_split(args, m, d):
    """--eval_split auto: 'tune' where the data set has a tuning split, else 'test'."""
    if args.eval_split != "auto":
        return args.eval_split
    if os.path.exists(features_path(args.output_dir, m, d, "labels", "tune")):
        return "tune"
    if has_tuning_split(args.dataset_name):
        if not os.path.exists(features_path(args.output_dir, m, d, "labels", "train")):
            return "tune"  # stages 1-2 have not run at all: loading says so first
        raise UsageError(f"{args.dataset_name} has a tuning split: run get_activations_only.py --splits tune and "
                         f"reward_label.py --mode tune first (its loss is the one reported), or pass --eval_split "
                         f"test")
    return "test"


def run_train_value_model(args):
    """Stage 3 (a ValueModelConfig); returns the (last round's) value model's path without extension."""
    device = resolve_device(args.device)
    m, d = model_tag(args.model_name), named_dataset(args)
    default_layers, default_hidden = default_shape(args.model_name, args.dataset_name)
    args = dataclasses.replace(args, num_layers=default_layers if args.num_layers is None else args.num_layers,
                               hidden_dim=default_hidden if args.hidden_dim is None else args.hidden_dim)
    args = dataclasses.replace(args, eval_split=resolve_eval_split(args, m, d))
    first = dataclasses.replace(args, rounds=1, refit_step_size=None, refit_num_updates=None)
    lineage = None
    if args.rounds > 1:  # the first of a chain says so; a plain run's description stays the paper's
        lineage = {"round": 1, "parent": None,
                   "rollouts": os.path.relpath(features_path(args.output_dir, m, d, "response", "train"),
                                               args.output_dir)}
    stem = train_round(first, device, args.output_dir, lineage)
    if args.rounds > 1:
        from utils.stages.refit import refit_rounds
        stem = refit_rounds(args, stem, lambda config, root, lineage: train_round(config, device, root, lineage))
    return stem


def train_round(args, device, train_root, lineage=None):
    """Train and save one value model on the training split under `train_root` (the tuning split is read from
    --output_dir); `lineage`: a refit's parent and rollouts, kept in the value model's description."""
    start = time.time()
    m, d = model_tag(args.model_name), named_dataset(args)
    variant = value_model_variant(as_dict(args), args.model_name, args.dataset_name)
    stem = args.value_model or value_model_stem(args.output_dir, m, d, args.lr, variant)
    stem = stem.removesuffix(".safetensors")
    settings = run_settings(args)
    refuse_overwrite(stem + ".safetensors", settings, args.overwrite, description=stem + ".json")
    # ------------------------------------------------------------------------------------------------------ load
    train = load_sequences(train_root, m, d, "train")
    test = load_sequences(args.output_dir, m, d, args.eval_split)
    validation = None
    if args.val_fraction or args.margin_weight:
        records = load_json(features_path(train_root, m, d, "response", "train"),
                            "get_activations_only.py")
        if len(records) != len(train):
            raise UsageError(f"{len(records)} training responses for {len(train)} feature sequences; re-run "
                                 f"get_activations_only.py")
        if args.margin_weight:  # the margin loss pairs each prompt's best and worst responses
            train = with_prompt_groups(train, [r["prompt"] for r in records])
        if args.val_fraction:
            train, validation = split_by_group(train, [r["prompt"] for r in records], args.val_fraction,
                                               args.seed)
    training = ValueTrainingConfig(**{k: getattr(args, k) for k in ValueTrainingConfig.__dataclass_fields__
                                      if k != "device"}, device=str(device))
    baseline = ((test.labels - train.labels.mean()) ** 2).mean().item()
    print(f"train: {len(train)} sequences, {train.num_steps} steps"
          + (f"; validation: {len(validation)} sequences" if validation else "")
          + f"; {args.eval_split}: {len(test)} sequences; d = {train.dim}; terminal loss of predicting the mean train "
            f"reward on {args.eval_split}: {baseline:.4f}")
    # ------------------------------------------------------------------------------------------------------ train
    description = dict(llm=args.model_name, dataset=args.dataset_name, lr=args.lr, num_train=len(train),
                       baseline_terminal_loss=baseline, settings=settings,
                       **({"adapter": args.adapter} if args.adapter else {}),
                       **({"lineage": lineage} if lineage else {}))

    def on_epoch(epoch, current, row):
        tqdm.write(f"epoch {epoch:4d}  train loss {row['train_loss']:.5f}  {args.eval_split} loss "
                   f"{row['test_loss']:.5f} "
                   f"(td {row['test_td']:.5f}, terminal {row['test_terminal']:.5f})"
                   + (f"  validation MC error {row['val_mc']:.5f}" if validation else ""))
        if epoch % args.checkpoint_every == 0 and epoch != args.epochs:
            save_value_model(current(), f"{stem}_{epoch}", epoch=epoch, test_loss=row["test_loss"], **description)
    result = fit_value_model(train, training, validation, {"test": test}, on_epoch, progress=True)
    rows, kept = result.log, result.kept
    # ------------------------------------------------------------------------------------------------------ save
    save_value_model(result.model, stem, epoch=kept["epoch"], test_loss=kept["test_loss"],
                     test_terminal_loss=kept["test_terminal"], test_mc_error=kept["test_mc"],
                     val_mc_error=kept.get("val_mc"), seconds=round(time.time() - start, 2),
                     num_parameters=sum(p.numel() for p in result.model.parameters()), **peak_memory_mb(),
                     **description)
    save_csv(rows, stem + "_log.csv")
    plot_losses(rows, stem + "_loss.png", baseline, args.eval_split)
    print(f"value model (epoch {kept['epoch']}"
          + (f", lowest validation MC error {kept['val_mc']:.5f}" if args.early_stopping else "")
          + f") -> {stem}.safetensors "
          f"({args.eval_split} loss {kept['test_loss']:.5f}, terminal {kept['test_terminal']:.5f} vs {baseline:.5f} "
          f"for "
          f"the mean)")
    return stem
