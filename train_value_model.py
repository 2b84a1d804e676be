"""Stage 3: train the value model V(o_t) with the Bellman (TD(0)) loss on the stage-1 features and stage-2 labels.

The paper's command line (GPU):
    python train_value_model.py --model_name llama3_8B --dataset_name shp --lr 0.001

The embedded offline default:
    python train_value_model.py --model_name smollm2_135M --dataset_name demo --lr 0.001 --epochs 60

Loss per batch of sequences = [sum over consecutive valid steps (V(o_t) - V(o_{t+1}))^2 (target detached)
+ sum over sequences (V(o_T) - r)^2] / batch size, with T the last valid step and r the reward label.
Writes trained_model/value_model_{m}_{d}_{lr}.safetensors (+ .json: architecture, LLM, feature size), a checkpoint
_{epoch} every 10 epochs, and the loss curves as _log.csv and _loss.png.
"""
import csv
import math

import torch
from tqdm.auto import tqdm

from utils import cli
from utils.features import load_sequences
from utils.io import atomic_path, model_tag, new_figure, run_settings, save_figure, value_model_stem
from utils.runs import refuse_overwrite
from utils.value_model import ValueModel, bellman_loss, save_value_model


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
    parser.add_argument("--checkpoint_every", type=cli.positive_int, default=10, help="save a checkpoint every N epochs")
    parser.add_argument("--device", type=str, default="auto", help="'auto', 'cpu', 'cuda', 'cuda:N' or a GPU index")
    parser.add_argument("--seed", type=int, default=0, help="random seed (initialisation, shuffling)")
    parser.add_argument("--num_threads", type=cli.positive_int, default=None, help="torch CPU threads")
    cli.add_output_args(parser)
    return parser.parse_args(argv)


def run_epoch(model, data, batch_size, device, optimizer=None, detach_target=True, generator=None):
    """Mean per-sequence (loss, td, terminal) over the split; one optimizer step per batch if training."""
    order = torch.randperm(len(data), generator=generator) if optimizer else torch.arange(len(data))
    totals = torch.zeros(3)
    for start in range(0, len(data), batch_size):
        ids = order[start:start + batch_size]
        states, lengths, rewards = data.batch(ids)
        with torch.set_grad_enabled(optimizer is not None):
            parts = bellman_loss(model(states.to(device)), lengths.to(device), rewards.to(device), detach_target)
        if optimizer:
            optimizer.zero_grad()
            parts[0].backward()
            optimizer.step()
        totals += torch.tensor([p.item() for p in parts]) * len(ids)
    return (totals / len(data)).tolist()


def plot_losses(rows, path, baseline):
    fig, ax = new_figure(figsize=(6, 4))
    epochs = [r["epoch"] for r in rows]
    ax.plot(epochs, [r["train_loss"] for r in rows], label="train")
    ax.plot(epochs, [r["test_loss"] for r in rows], label="test")
    ax.plot(epochs, [r["test_terminal"] for r in rows], "--", label="test, terminal part")
    ax.axhline(baseline, color="gray", linestyle=":", label="terminal part of predicting the mean reward")
    ax.set_xlabel("epoch")
    ax.set_ylabel("Bellman loss per sequence")
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
    stem = value_model_stem(args.output_dir, m, args.dataset_name, args.lr)
    settings = run_settings(args)
    refuse_overwrite(stem + ".safetensors", settings, args.overwrite, description=stem + ".json")
    # ------------------------------------------------------------------------------------------------------ load
    train = load_sequences(args.output_dir, m, args.dataset_name, "train")
    test = load_sequences(args.output_dir, m, args.dataset_name, "test")
    model = ValueModel(train.dim, args.hidden_dim or train.dim, args.num_layers).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    generator = torch.Generator().manual_seed(args.seed)
    baseline = ((test.labels - train.labels.mean()) ** 2).mean().item()
    print(f"train: {len(train)} sequences, {train.num_steps} steps; test: {len(test)} sequences; "
          f"d = {train.dim}; terminal loss of predicting the mean train reward on test: {baseline:.4f}")
    # ------------------------------------------------------------------------------------------------------ train
    description = dict(llm=args.model_name, dataset=args.dataset_name, lr=args.lr, num_train=len(train),
                       baseline_terminal_loss=baseline, settings=settings)
    rows = []
    progress = tqdm(range(1, args.epochs + 1), desc="epochs")
    for epoch in progress:
        model.train()
        train_parts = run_epoch(model, train, args.batch_size, device, optimizer, args.detach_target, generator)
        model.eval()
        test_parts = run_epoch(model, test, args.batch_size, device)
        if not all(math.isfinite(x) for x in train_parts + test_parts):
            raise cli.UsageError(f"the loss became NaN or inf at epoch {epoch}; lower --lr or check the features")
        rows.append(dict(epoch=epoch, **{f"train_{k}": v for k, v in zip(("loss", "td", "terminal"), train_parts)},
                         **{f"test_{k}": v for k, v in zip(("loss", "td", "terminal"), test_parts)}))
        progress.write(f"epoch {epoch:4d}  train loss {train_parts[0]:.5f}  test loss {test_parts[0]:.5f} "
                       f"(td {test_parts[1]:.5f}, terminal {test_parts[2]:.5f})")
        if epoch % args.checkpoint_every == 0 and epoch != args.epochs:
            save_value_model(model, f"{stem}_{epoch}", epoch=epoch, test_loss=test_parts[0], **description)
    # ------------------------------------------------------------------------------------------------------ save
    last = rows[-1]
    save_value_model(model, stem, epoch=args.epochs, test_loss=last["test_loss"],
                     test_terminal_loss=last["test_terminal"], **description)
    with atomic_path(stem + "_log.csv") as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    plot_losses(rows, stem + "_loss.png", baseline)
    print(f"value model -> {stem}.safetensors (test loss {last['test_loss']:.5f}, terminal {last['test_terminal']:.5f}"
          f" vs {baseline:.5f} for the mean)")


if __name__ == "__main__":
    cli.main_guard(main)
