"""Stage 4 for the paper's comparison methods: Static RE, Best-of-N, ARGS and CD prefix, in the stage-4 format.

    python decode_methods.py --method static_re --strength 4.0 --value_lr 0.001    # probe from stages 1-2 features
    python decode_methods.py --method best_of_n --num_candidates 4 --reward_model vader
    python decode_methods.py --method args --top_k 10 --weight 1.0 --reward_model vader
    python decode_methods.py --method cd_prefix --num_candidates 4 --block_size 8 --value_lr 0.001

Static RE adds one fixed vector (strength x the unit direction of a linear probe that predicts the reward from the
stage-1 features and stage-2 labels) to o_t at every step. Best-of-N keeps the highest-reward of N sampled responses.
ARGS re-ranks the top-k tokens at every step by logit + weight x reward(prefix + token); the reward reads text, so a
reward model with another tokenizer re-tokenizes it. CD prefix samples K blocks of B tokens and keeps the one whose
last state the trained value model rates highest. Writes response/{m}_{d}_{method}_{settings}.json and .meta.json.
"""
from utils import cli
from utils.stages.stage4_inference import METHODS, run_decode_method
from utils.sweep import read_choice


def parse_args(argv=None):
    parser = cli.make_parser(__doc__)
    cli.add_policy_stage_args(parser, batch_size=16, max_new_tokens=128)
    parser.add_argument("--method", type=str, required=True, choices=METHODS, help="the comparison method")
    parser.add_argument("--split", type=str, default="test", help="data split to answer")
    parser.add_argument("--prompting", type=cli.str2bool, default=False, help="prepend the paper's alignment prompt")
    parser.add_argument("--strength", type=cli.nonnegative_float, default=4.0,
                        help="static_re: length of the control vector added to o_t")
    parser.add_argument("--settings_from", type=str, default=None,
                        help="static_re: take the strength from a Static RE sweep result "
                             "(results/{m}_{d}_sweep_static_re.json from sweep.py --method static_re)")
    parser.add_argument("--value_lr", type=cli.positive_float, default=1e-3,
                        help="cd_prefix: picks trained_model/value_model_{m}_{d}_{value_lr}[_variant] and names the "
                             "output")
    parser.add_argument("--value_model", type=str, default=None,
                        help="cd_prefix: path of a value model (without extension) instead of the one --value_lr "
                             "picks")
    parser.add_argument("--reward_model", type=str, default="vader",
                        help="best_of_n / args: 'vader', openbmb/UltraRM-13b or a sequence-classification RM")
    parser.add_argument("--num_candidates", type=cli.positive_int, default=4,
                        help="best_of_n: N sampled responses; cd_prefix: K sampled blocks")
    parser.add_argument("--temperature", type=cli.positive_float, default=0.7, help="sampling temperature")
    parser.add_argument("--top_p", type=cli.positive_float, default=0.95, help="sampling nucleus top-p")
    parser.add_argument("--top_k", type=cli.positive_int, default=10,
                        help="args: candidate tokens re-ranked per step (sampling uses top-k 50)")
    parser.add_argument("--weight", type=cli.nonnegative_float, default=1.0, help="args: reward weight w")
    parser.add_argument("--block_size", type=cli.positive_int, default=8, help="cd_prefix: tokens per block")
    args = parser.parse_args(argv)
    if args.settings_from:
        if args.method != "static_re":
            parser.error("--settings_from reads a Static RE strength: use it with --method static_re")
        args.strength = read_choice(args.settings_from, "static_re", args.model_name)[0]["strength"]
    return args


def main(argv=None):
    args = parse_args(argv)
    cli.setup(args)
    run_decode_method(args)


if __name__ == "__main__":
    cli.main_guard(main)
