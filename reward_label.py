"""Stage 2: score every stage-1 response with a reward model; the scores are the value model's terminal targets.

The paper's command line (GPU, hub access):
    python reward_label.py --model_name llama3_8B --dataset_name shp --reward_model openbmb/UltraRM-13b --mode train

The embedded offline default (VADER sentiment of the answer):
    python reward_label.py --model_name smollm2_135M --dataset_name demo --reward_model vader --mode train

Reads features/{m}_{d}_response_{mode}.json; writes features/{m}_{d}_labels_{mode}.json, a saved float tensor
(the original's name, despite the extension).
"""
from utils import cli
from utils.stages.stage2_reward_label import run_reward_label


def parse_args(argv=None):
    parser = cli.make_parser(__doc__)
    parser.add_argument("--model_name", type=str, default="smollm2_135M",
                        help="the policy LLM whose stage-1 responses are scored (names the files)")
    parser.add_argument("--dataset_name", type=str, default="demo", help="data set name used in stage 1")
    parser.add_argument("--mode", type=str, default="train",
                        help="which split to label: train, test, or any other split stage 1 wrote (e.g. tune)")
    parser.add_argument("--adapter", type=str, default=None,
                        help="the LoRA adapter folder stage 1 ran with (--adapter there): names the files as stage 1 "
                             "did ({m}_{d}_{adapter tag}_...)")
    cli.add_reward_stage_args(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cli.setup(args)
    run_reward_label(args)


if __name__ == "__main__":
    cli.main_guard(main)
