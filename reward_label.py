"""Stage 2: score every stage-1 response with a reward model; the scores are the value model's terminal targets.

The paper's command line (GPU, hub access):
    python reward_label.py --model_name llama3_8B --dataset_name shp --reward_model openbmb/UltraRM-13b --mode train

The embedded offline default (VADER sentiment of the answer):
    python reward_label.py --model_name smollm2_135M --dataset_name demo --reward_model vader --mode train

Reads features/{m}_{d}_response_{mode}.json; writes features/{m}_{d}_labels_{mode}.json, a saved float tensor
(the original's name, despite the extension).
"""
from utils import cli
from utils.configs import RewardLabelConfig
from utils.stages.stage2_reward_label import run_reward_label


def build_parser():
    return cli.build_parser(__doc__, RewardLabelConfig)


def parse_args(argv=None):
    return cli.parse_config(build_parser(), RewardLabelConfig, argv)


def main(argv=None):
    args = parse_args(argv)
    cli.setup(args)
    run_reward_label(args)


if __name__ == "__main__":
    cli.main_guard(main)
