"""RE-Control on llama3_8B / shp, the paper's setting (Kong et al. 2024, Table 1; GPU and hub access).

    python recipes/llama3_8B_shp.py --dry_run True     # print the stage commands
    python recipes/llama3_8B_shp.py                    # run them: stages 1-6 and the table
                                                       # (add --judge True for stage 7)

Reward model openbmb/UltraRM-13b; value model: 2 Linear layers of width 4096, Adam lr 0.001, 100 epochs; step size alpha
1.0, 30 updates.
Reproduces: Table 1, SHP / Llama-3-8B: average reward -4.64 (Base), -4.39 (RE-Control), -4.14 (RE-Control + Prompting);
GPT-4 win 56.3%, 71.0%, 77.0%.
"""
import os
import sys

# run as a file outside the repository root (python DIR/FILE.py): the root holds utils
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils import cli  # noqa: E402
from utils.recipes import Setting, main  # noqa: E402

SETTING = Setting(model_name="llama3_8B", dataset_name="shp", reward_model="openbmb/UltraRM-13b", num_layers=2,
                  value_lr=0.001, step_size=1.0, num_updates=30,
                  reproduces="Table 1, SHP / Llama-3-8B: average reward -4.64 (Base), -4.39 (RE-Control), -4.14 "
                             "(RE-Control + Prompting); GPT-4 win 56.3%, 71.0%, 77.0%")

if __name__ == "__main__":
    cli.main_guard(lambda: main(SETTING, __doc__))
