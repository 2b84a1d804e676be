"""Stages 5 and 6 for several runs of one folder in one process, the reward model and the sentence encoder loaded
once. Each run is scored as measure_reward.py and metrics.py score it, at their defaults for every flag not given
here, and skipped as they skip a result written with the same settings. It saves a process start and model load per
run and stage (seconds each); scripts/replicate.sh scores each draw's runs this way.

    python scripts/score_runs.py --output_dir runs/polar/seed0 --dataset_name demo_polar --reward_model vader_polar \\
        --baseline smollm2_135M_demo_polar_base --embedding_model minilm \\
        smollm2_135M_demo_polar_base smollm2_135M_demo_polar_0.001_td1_vf0.1_es_10_1.0

List the baseline run first: it is scored without a pair, every other run with the paired difference to it.
"""
import os
import sys

# run as a file outside the repository root (python DIR/FILE.py): the root holds utils
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils import cli  # noqa: E402
from utils.configs import MeasureRewardConfig, MetricsConfig  # noqa: E402
from utils.stages.scoring import score_runs  # noqa: E402


def build_parser():
    # --device and --batch_size are the reward model's (stage 6 keeps metrics.py's defaults)
    parser = cli.build_parser(__doc__, MeasureRewardConfig, MetricsConfig, exclude=("out_file", "run_name"))
    parser.add_argument("runs", nargs="+", help="run names: response/{run}.json under --output_dir, in order")
    return parser


def main(argv=None):
    values = cli.parse(build_parser(), argv)
    runs = values.pop("runs")
    metrics_values = {"embedding_model": values.pop("embedding_model"), "output_dir": values["output_dir"],
                      "overwrite": values["overwrite"]}
    score_runs(runs, values["baseline"], values, metrics_values)


if __name__ == "__main__":
    cli.main_guard(main)
