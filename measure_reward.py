"""Stage 5: average reward of a run's responses, scored by the same reward backends as stage 2.

The paper's command line (GPU, hub access):
    python measure_reward.py --out_file llama3_8B_shp_0.001_30_1.0 --model_name llama3_8B --dataset_name shp \\
        --reward_model openbmb/UltraRM-13b

The embedded offline default, with the paired difference to the base run:
    python measure_reward.py --out_file smollm2_135M_demo_0.001_td1_vf0.1_es_10_3.0 --reward_model vader \\
        --baseline smollm2_135M_demo_base

Each generation is cut where the model starts the user's next turn ('Human:' / 'User:'), re-joined with its prompt,
and scored. Writes final_reward/{out_file}.json: average, standard error, count and every reward.
"""
from utils import cli
from utils.configs import MeasureRewardConfig
from utils.stages.stage5_reward import run_measure_reward


def build_parser():
    return cli.build_parser(__doc__, MeasureRewardConfig)


def parse_args(argv=None):
    return cli.parse_config(build_parser(), MeasureRewardConfig, argv)


def main(argv=None):
    args = parse_args(argv)
    cli.setup(args)
    run_measure_reward(args)


if __name__ == "__main__":
    cli.main_guard(main)
