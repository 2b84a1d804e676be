"""RE-Control on falcon_7B / hh_rlhf, the paper's setting (Kong et al. 2024, Table 1; GPU and hub access).

    python recipes/falcon_7B_hh_rlhf.py --dry_run True     # print the stage commands
    python recipes/falcon_7B_hh_rlhf.py                    # run them: stages 1-6 and the table
                                                           # (add --judge True for stage 7)

Reward model argsearch/llama-7b-rm-float32; value model: 2 Linear layers of width 4096, Adam lr 0.0001, 100 epochs; step
size alpha 0.2, 200 updates.
Reproduces: Table 1, HH-RLHF / Falcon-7B: average reward 3.439 (Base), 3.512 (RE-Control), 4.083 (RE-Control +
Prompting); GPT-4 win 42.3%, 58.0%, 62.6%.
"""
import os
import sys

# run as a file outside the repository root (python DIR/FILE.py): the root holds utils
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils import cli  # noqa: E402
from utils.recipes import Setting, main  # noqa: E402

SETTING = Setting(model_name="falcon_7B", dataset_name="hh_rlhf", reward_model="argsearch/llama-7b-rm-float32",
                  num_layers=2, value_lr=0.0001, step_size=0.2, num_updates=200,
                  reproduces="Table 1, HH-RLHF / Falcon-7B: average reward 3.439 (Base), 3.512 (RE-Control), 4.083 "
                             "(RE-Control + Prompting); GPT-4 win 42.3%, 58.0%, 62.6%")

if __name__ == "__main__":
    cli.main_guard(lambda: main(SETTING, __doc__))
