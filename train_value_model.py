"""Stage 3: train the value model V(o_t) with the Bellman (TD(0)) loss on the stage-1 features and stage-2 labels.

The paper's command line (GPU):
    python train_value_model.py --model_name llama3_8B --dataset_name shp --lr 0.001

The embedded offline default (scripts/demo.sh: the Monte-Carlo target and early stopping, chosen on the tuning split):
    python train_value_model.py --model_name smollm2_135M --dataset_name demo --lr 0.001 --td_lambda 1 \\
        --val_fraction 0.1 --early_stopping True --epochs 100 --eval_split tune

Loss per batch of sequences = [sum over consecutive valid steps (V(o_t) - V(o_{t+1}))^2 (target detached)
+ sum over sequences (V(o_T) - r)^2] / batch size, with T the last valid step and r the reward label.
Writes trained_model/value_model_{m}_{d}_{lr}.safetensors (+ .json: architecture, LLM, feature size), a checkpoint
_{epoch} every 10 epochs, and the loss curves as _log.csv and _loss.png. Settings other than the paper's show in
the name, so a sweep over them never overwrites: e.g. value_model_{m}_{d}_{lr}_ep50_L3_h1024_s1 (epochs 50, 3
layers, width 1024, seed 1); codes in utils.names.NAME_CODES. Stage 4 finds it by --value_lr alone when it is the
only value model with that lr, and asks for --value_model otherwise.

Levers beyond the paper (each default keeps the paper's behaviour):
    --td_lambda 1                    regress every valid step on the final reward (the Monte-Carlo end of TD(lambda))
    --val_fraction 0.1 --early_stopping True
                                     hold out 10% of the training prompts; keep the epoch with the lowest validation
                                     Monte-Carlo error (never the test split)
    --standardize_rewards True       train on (r - mean) / std; the saved model is folded back to reward units
    --value_model PATH               save under PATH (no extension) instead of the original name, e.g. for sweeps
"""
from utils import cli
from utils.stages.stage3_value_model import run_train_value_model


def parse_args(argv=None):
    parser = cli.make_parser(__doc__)
    parser.add_argument("--model_name", type=str, default="smollm2_135M", help="the LLM whose features are used")
    parser.add_argument("--dataset_name", type=str, default="demo", help="data set name used in stages 1-2")
    parser.add_argument("--adapter", type=str, default=None,
                        help="the LoRA adapter folder stage 1 ran with (--adapter there): names the files as stage 1 "
                             "did ({m}_{d}_{adapter tag}_...)")
    parser.add_argument("--lr", type=cli.positive_float, default=1e-4, help="Adam learning rate (names the file)")
    parser.add_argument("--epochs", type=cli.positive_int, default=100, help="training epochs")
    parser.add_argument("--batch_size", type=cli.positive_int, default=512, help="sequences per batch")
    parser.add_argument("--num_layers", type=int, default=None, choices=[2, 3],
                        help="Linear layers of the MLP (default: the paper's, 3 for vicuna_7B on hh_rlhf, else 2)")
    parser.add_argument("--hidden_dim", type=cli.positive_int, default=None,
                        help="MLP width (default: the paper's 4096 for its LLMs, else the LLM's hidden size)")
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
                             "trained_model/value_model_{m}_{d}_{lr}[_variant]")
    parser.add_argument("--checkpoint_every", type=cli.positive_int, default=10, help="save a checkpoint every N epochs")
    parser.add_argument("--device", type=str, default="auto", help="'auto', 'cpu', 'cuda', 'cuda:N' or a GPU index")
    parser.add_argument("--seed", type=int, default=0, help="random seed (initialisation, shuffling)")
    parser.add_argument("--num_threads", type=cli.positive_int, default=None, help="torch CPU threads")
    cli.add_output_args(parser)
    args = parser.parse_args(argv)
    if args.early_stopping and not args.val_fraction:
        parser.error("--early_stopping True needs a validation slice: pass --val_fraction (e.g. 0.1)")
    return args


def main(argv=None):
    args = parse_args(argv)
    cli.setup(args)
    run_train_value_model(args)


if __name__ == "__main__":
    cli.main_guard(main)
