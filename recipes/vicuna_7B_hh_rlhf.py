"""RE-Control on vicuna_7B / hh_rlhf, the paper's setting (Kong et al. 2024, Table 1; GPU and hub access).

    python recipes/vicuna_7B_hh_rlhf.py --dry_run True     # print the stage commands
    python recipes/vicuna_7B_hh_rlhf.py                    # run them: stages 1-6 and the table
                                                           # (add --judge True for stage 7)

Reward model argsearch/llama-7b-rm-float32; value model: 3 Linear layers of width 4096, Adam lr 0.0001, 100 epochs; step
size alpha 0.5, 30 updates.
Reproduces: Table 1, HH-RLHF / Vicuna-7B: Base diversity 0.816, coherence 0.568, average reward 5.894, GPT-4 win 57.6%;
RE-Control 0.824, 0.579, 6.214, 75.6%; RE-Control + Prompting 0.830, 0.577, 6.267, 80.3%.
"""
import os
import sys

# run as a file outside the repository root (python DIR/FILE.py): the root holds utils
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils import cli  # noqa: E402
from utils.recipes import Setting, main  # noqa: E402

SETTING = Setting(model_name="vicuna_7B", dataset_name="hh_rlhf", reward_model="argsearch/llama-7b-rm-float32",
                  num_layers=3, value_lr=0.0001, step_size=0.5, num_updates=30,
                  reproduces="Table 1, HH-RLHF / Vicuna-7B: Base diversity 0.816, coherence 0.568, average reward "
                             "5.894, GPT-4 win 57.6%; RE-Control 0.824, 0.579, 6.214, 75.6%; RE-Control + Prompting "
                             "0.830, 0.577, 6.267, 80.3%")

if __name__ == "__main__":
    cli.main_guard(lambda: main(SETTING, __doc__))
