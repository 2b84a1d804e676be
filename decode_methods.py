"""Stage 4 for any registered decoding method (utils.decoding): the paper's comparison methods Static RE, Best-of-N,
ARGS and CD prefix, and base, prompting, re_control, re_control_prompting, in the stage-4 format.

    python decode_methods.py --method static_re --strength 4.0 --value_lr 0.001    # probe from stages 1-2 features
    python decode_methods.py --method best_of_n --num_candidates 4 --reward_model vader
    python decode_methods.py --method args --top_k 10 --weight 1.0 --reward_model vader
    python decode_methods.py --method cd_prefix --num_candidates 4 --block_size 8 --value_lr 0.001

Static RE adds one fixed vector (strength x the unit direction of a linear probe that predicts the reward from the
stage-1 features and stage-2 labels) to o_t at every step. Best-of-N keeps the highest-reward of N sampled responses.
ARGS re-ranks the top-k tokens at every step by logit + weight x reward(prefix + token); the reward reads text, so a
reward model with another tokenizer re-tokenizes it. CD prefix samples K blocks of B tokens and keeps the one whose
last state the trained value model rates highest. Writes response/{m}_{d}_{method}_{settings}.json and .meta.json;
the last line printed is 'run name: NAME'. A method of your own: docs/extending.md.
"""
from utils import cli
from utils.config import build
from utils.configs import DecodeConfig
from utils.decoding import get_method, methods, option_classes, options_from
from utils.stages.stage4_inference import RunNameSwitch, Stage4Args, run_stage4_script


def build_parser():
    parser = cli.build_parser(__doc__, DecodeConfig, RunNameSwitch, *option_classes(), exclude=("method",))
    parser.add_argument("--method", type=str, required=True, choices=list(methods()),
                        help="the decoding method (utils.decoding registry)")
    return parser


def parse_args(argv=None):
    values = cli.parse(build_parser(), argv)
    return Stage4Args(build(DecodeConfig, values), options_from(get_method(values["method"]), values),
                      values["print_run_name"])


def main(argv=None):
    run_stage4_script(parse_args(argv))


if __name__ == "__main__":
    cli.main_guard(main)
