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
    --margin_weight 1                Pref-CTRL's preference-margin loss beside the regression (file name _pm1)
    --rounds 2 --refit_step_size 1 --refit_num_updates 10
                                     one on-policy refit (IVO): stage 1 again with this value model's edit on
                                     (stage 1's and stage 2's own settings, from their .meta.json; vLLM where
                                     installed), relabelled, and a second value model trained on those rollouts:
                                     ..._r2_ra1_rn10, whose .json "lineage" names its parent (refits/ holds the
                                     rollouts)
"""
from utils import cli
from utils.configs import ValueModelConfig
from utils.stages.stage3_value_model import run_train_value_model


def build_parser():
    return cli.build_parser(__doc__, ValueModelConfig)


def parse_args(argv=None):
    return cli.parse_config(build_parser(), ValueModelConfig, argv)


def main(argv=None):
    args = parse_args(argv)
    cli.setup(args)
    run_train_value_model(args)


if __name__ == "__main__":
    cli.main_guard(main)
