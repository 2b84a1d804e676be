"""Stage 3: train the value model V(o_t) with the Bellman (TD(0)) loss on the stage-1 features and stage-2 labels.

The paper's command line (GPU):
    python train_value_model.py --model_name llama3_8B --dataset_name shp --lr 0.001

The embedded offline default (scripts/demo.sh: the Monte-Carlo target and early stopping, chosen on the tuning split):
    python train_value_model.py --model_name smollm2_135M --dataset_name demo --lr 0.001 --td_lambda 1 \\
        --val_fraction 0.1 --early_stopping True --epochs 100 --eval_split tune

Loss per batch of sequences = [sum over consecutive valid steps (V(o_t) - V(o_{t+1}))^2 (target detached)
+ sum over sequences (V(o_T) - r)^2] / batch size, with T the last valid step and r the reward label.
Writes trained_model/value_model_{m}_{d}_{lr}.safetensors (+ .json: architecture, LLM, feature size), a checkpoint
_{epoch} every 10 epochs, and the loss curves as _log.csv and _loss.png.

Levers beyond the paper (each default keeps the paper's behaviour):
    --td_lambda 1                    regress every valid step on the final reward (the Monte-Carlo end of TD(lambda))
    --val_fraction 0.1 --early_stopping True
                                     hold out 10% of the training prompts; keep the epoch with the lowest validation
                                     Monte-Carlo error (never the test split)
    --standardize_rewards True       train on (r - mean) / std; the saved model is folded back to reward units
    --value_model PATH               save under PATH (no extension) instead of the original name, e.g. for sweeps
"""
import csv

from tqdm.auto import tqdm

from utils import cli
from utils.features import load_sequences
from utils.io import (
    atomic_path,
    features_path,
    load_json,
    model_tag,
    new_figure,
    run_settings,
    save_figure,
    value_model_stem,
)
from utils.runs import refuse_overwrite
from utils.training import ValueTrainingConfig, fit_value_model, split_by_group
from utils.value_model import save_value_model


def parse_args(argv=None):
    parser = cli.make_parser(__doc__)
    parser.add_argument("--model_name", type=str, default="smollm2_135M", help="the LLM whose features are used")
    parser.add_argument("--dataset_name", type=str, default="demo", help="data set name used in stages 1-2")
    parser.add_argument("--lr", type=cli.positive_float, default=1e-4, help="Adam learning rate (names the file)")
    parser.add_argument("--epochs", type=cli.positive_int, default=100, help="training epochs")
    parser.add_argument("--batch_size", type=cli.positive_int, default=512, help="sequences per batch")
    parser.add_argument("--num_layers", type=int, default=2, choices=[2, 3],
                        help="Linear layers of the MLP (paper: 3 for Vicuna/HH-RLHF, 2 elsewhere)")
    parser.add_argument("--hidden_dim", type=cli.positive_int, default=None,
                        help="MLP width (default: the LLM's hidden size; the paper uses 4096)")
    parser.add_argument("--weight_decay", type=cli.nonnegative_float, default=0.0, help="Adam weight decay")
    parser.add_argument("--detach_target", type=cli.str2bool, default=True,
                        help="stop the gradient through V(o_{t+1}) (False = the original training loss)")
    parser.add_argument("--td_lambda", type=cli.unit_float, default=0.0,
                        help="value target: 0 = the paper's TD(0) (V(o_t) -> V(o_{t+1})); 1 = every valid step "
                             "regressed on the final reward (Monte Carlo); between: the undiscounted lambda-return")
    parser.add_argument("--val_fraction", type=cli.unit_float, default=0.0,
                        help="fraction of the training PROMPTS (all their responses) held out as a validation slice; "
                             "its Monte-Carlo error is logged every epoch")
    parser.add_argument("--early_stopping", type=cli.str2bool, default=False,
                        help="keep the epoch with the lowest validation Monte-Carlo error (needs --val_fraction > 0) "
                             "instead of the last one")
    parser.add_argument("--standardize_rewards", type=cli.str2bool, default=False,
                        help="train on standardised rewards (train mean 0, std 1); the saved model is folded back "
                             "to reward units, so step sizes keep their meaning")
    parser.add_argument("--eval_split", type=str, default="test",
                        help="split whose loss is reported every epoch (never used for a choice)")
    parser.add_argument("--value_model", type=str, default=None,
                        help="save the value model under this path (no extension) instead of "
                             "trained_model/value_model_{m}_{d}_{lr}")
    parser.add_argument("--checkpoint_every", type=cli.positive_int, default=10, help="save a checkpoint every N epochs")
    parser.add_argument("--device", type=str, default="auto", help="'auto', 'cpu', 'cuda', 'cuda:N' or a GPU index")
    parser.add_argument("--seed", type=int, default=0, help="random seed (initialisation, shuffling)")
    parser.add_argument("--num_threads", type=cli.positive_int, default=None, help="torch CPU threads")
    cli.add_output_args(parser)
    args = parser.parse_args(argv)
    if args.early_stopping and not args.val_fraction:
        parser.error("--early_stopping True needs a validation slice: pass --val_fraction (e.g. 0.1)")
    return args


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


def main(argv=None):
    args = parse_args(argv)
    cli.setup(args)
    from utils.models import resolve_device
    device = resolve_device(args.device)
    m = model_tag(args.model_name)
    stem = args.value_model or value_model_stem(args.output_dir, m, args.dataset_name, args.lr)
    stem = stem.removesuffix(".safetensors")
    settings = run_settings(args)
    refuse_overwrite(stem + ".safetensors", settings, args.overwrite, description=stem + ".json")
    # ------------------------------------------------------------------------------------------------------ load
    train = load_sequences(args.output_dir, m, args.dataset_name, "train")
    test = load_sequences(args.output_dir, m, args.dataset_name, args.eval_split)
    validation = None
    if args.val_fraction:
        records = load_json(features_path(args.output_dir, m, args.dataset_name, "response", "train"),
                            "get_activations_only.py")
        if len(records) != len(train):
            raise cli.UsageError(f"{len(records)} training responses for {len(train)} feature sequences; re-run "
                                 f"get_activations_only.py")
        train, validation = split_by_group(train, [r["prompt"] for r in records], args.val_fraction, args.seed)
    config = ValueTrainingConfig(**{k: getattr(args, k) for k in ValueTrainingConfig.__dataclass_fields__
                                    if k != "device"}, device=str(device))
    baseline = ((test.labels - train.labels.mean()) ** 2).mean().item()
    print(f"train: {len(train)} sequences, {train.num_steps} steps"
          + (f"; validation: {len(validation)} sequences" if validation else "")
          + f"; {args.eval_split}: {len(test)} sequences; d = {train.dim}; terminal loss of predicting the mean train "
            f"reward on {args.eval_split}: {baseline:.4f}")
    # ------------------------------------------------------------------------------------------------------ train
    description = dict(llm=args.model_name, dataset=args.dataset_name, lr=args.lr, num_train=len(train),
                       baseline_terminal_loss=baseline, settings=settings)

    def on_epoch(epoch, current, row):
        tqdm.write(f"epoch {epoch:4d}  train loss {row['train_loss']:.5f}  {args.eval_split} loss "
                   f"{row['test_loss']:.5f} "
                   f"(td {row['test_td']:.5f}, terminal {row['test_terminal']:.5f})"
                   + (f"  validation MC error {row['val_mc']:.5f}" if validation else ""))
        if epoch % args.checkpoint_every == 0 and epoch != args.epochs:
            save_value_model(current(), f"{stem}_{epoch}", epoch=epoch, test_loss=row["test_loss"], **description)
    result = fit_value_model(train, config, validation, {"test": test}, on_epoch, progress=True)
    rows, kept = result.log, result.kept
    # ------------------------------------------------------------------------------------------------------ save
    save_value_model(result.model, stem, epoch=kept["epoch"], test_loss=kept["test_loss"],
                     test_terminal_loss=kept["test_terminal"], test_mc_error=kept["test_mc"],
                     val_mc_error=kept.get("val_mc"), **description)
    with atomic_path(stem + "_log.csv") as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    plot_losses(rows, stem + "_loss.png", baseline, args.eval_split)
    print(f"value model (epoch {kept['epoch']}"
          + (f", lowest validation MC error {kept['val_mc']:.5f}" if args.early_stopping else "")
          + f") -> {stem}.safetensors "
          f"({args.eval_split} loss {kept['test_loss']:.5f}, terminal {kept['test_terminal']:.5f} vs {baseline:.5f} for "
          f"the mean)")


if __name__ == "__main__":
    cli.main_guard(main)
