"""RE-Control on vicuna_7B / shp, the paper's setting (Kong et al. 2024, Table 1; GPU and hub access).

    python recipes/vicuna_7B_shp.py --dry_run True     # print the stage commands
    python recipes/vicuna_7B_shp.py                    # run them: stages 1-6 and the table
                                                       # (add --judge True for stage 7)

Reward model openbmb/UltraRM-13b; value model: 2 Linear layers of width 4096, Adam lr 0.0001, 100 epochs; step size
alpha 1.0, 50 updates.
Reproduces: Table 1, SHP / Vicuna-7B: average reward -5.68 (Base), -5.38 (RE-Control), -4.63 (RE-Control + Prompting);
GPT-4 win 40.3%, 58.0%, 63.6%.
"""
import os
import sys

# run as a file outside the repository root (python DIR/FILE.py): the root holds utils
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils import cli  # noqa: E402
from utils.recipes import Setting, main  # noqa: E402

SETTING = Setting(model_name="vicuna_7B", dataset_name="shp", reward_model="openbmb/UltraRM-13b", num_layers=2,
                  value_lr=0.0001, step_size=1.0, num_updates=50,
                  reproduces="Table 1, SHP / Vicuna-7B: average reward -5.68 (Base), -5.38 (RE-Control), -4.63 "
                             "(RE-Control + Prompting); GPT-4 win 40.3%, 58.0%, 63.6%")

if __name__ == "__main__":
    cli.main_guard(lambda: main(SETTING, __doc__))
