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
import contextlib

from utils import cli
from utils.data import ALIGNMENT_PROMPT, load_prompts
from utils.features import load_sequences
from utils.generation import answer_prompts, decode_rows, generate_batch, generation_config
from utils.io import model_tag, response_path, run_settings, value_model_stem
from utils.methods import StaticIntervention, args_decode, best_of_n, cd_prefix_decode, linear_probe_direction
from utils.models import hidden_size, load_model_and_tokenizer, load_policy_tokenizer, resolve_model
from utils.rewards import load_reward_model
from utils.runs import refuse_overwrite
from utils.sweep import read_choice
from utils.value_model import check_value_model, load_value_model

METHODS = ("static_re", "best_of_n", "args", "cd_prefix")


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
                        help="static_re / cd_prefix: names the stage-1/2/3 artifacts to use "
                             "(cd_prefix: trained_model/value_model_{m}_{d}_{value_lr})")
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


def run_name(args, m):
    settings = {"static_re": f"{args.strength}", "best_of_n": f"{args.num_candidates}",
                "args": f"{args.top_k}_{args.weight}", "cd_prefix": f"{args.num_candidates}_{args.block_size}"}
    return f"{m}_{args.dataset_name}_{args.method}_{settings[args.method]}" + ("_prompting" if args.prompting else "")


def run(args, model=None, tokenizer=None):
    """A comparison method on parsed flags, with the policy already loaded if given; returns the run's name."""
    m = model_tag(args.model_name)
    name = run_name(args, m)
    out = response_path(args.output_dir, name)
    settings = run_settings(args)
    refuse_overwrite(out, settings, args.overwrite)
    # ------------------------------------------------------------------------------------------------------ load
    spec = resolve_model(args.model_name, args.chat_template)
    tokenizer = tokenizer or load_policy_tokenizer(spec, args.trust_remote_code)
    prompts = load_prompts(args, args.split, spec, tokenizer, ALIGNMENT_PROMPT if args.prompting else None)
    if model is None:
        model, tokenizer = load_model_and_tokenizer(spec, args.device, args.dtype, args.trust_remote_code,
                                                    args.device_map, tokenizer)
    add_special = not spec.chat_template
    hook, value_model, reward_model = None, None, None
    if args.method == "static_re":
        direction = linear_probe_direction(load_sequences(args.output_dir, m, args.dataset_name, "train"))
        hook = StaticIntervention(model, direction, args.strength)
    if args.method == "cd_prefix":
        value_model = load_value_model(value_model_stem(args.output_dir, m, args.dataset_name, args.value_lr))
        check_value_model(value_model, args.model_name, hidden_size(model))
        value_model.to(model.device)
    if args.method in ("best_of_n", "args"):
        reward_model = load_reward_model(args.reward_model, args.device, "auto", args.batch_size,
                                         args.trust_remote_code)
        if args.method == "args" and args.reward_model != "vader":
            print(f"note: ARGS scores text: each prefix is re-tokenized by {args.reward_model}'s tokenizer")
    # ------------------------------------------------------------------------------------------------------ run + save
    def decode_batch(texts, conversations):
        if args.method == "static_re":
            config = generation_config(model, tokenizer, args.max_new_tokens)
            return decode_rows(tokenizer, *generate_batch(model, tokenizer, texts, config, add_special))
        if args.method == "best_of_n":
            return best_of_n(model, tokenizer, texts, conversations, reward_model, args.num_candidates,
                             args.temperature, args.top_p, 50, args.max_new_tokens, add_special)
        if args.method == "args":
            return args_decode(model, tokenizer, texts, conversations, reward_model, args.top_k, args.weight,
                               args.max_new_tokens, add_special)
        return cd_prefix_decode(model, tokenizer, texts, value_model, args.num_candidates, args.block_size,
                                args.max_new_tokens, args.temperature, 50, args.top_p, add_special)
    with hook or contextlib.nullcontext():
        answer_prompts(args, prompts, tokenizer, add_special, decode_batch, f"generating ({args.method})", out,
                       settings, method=args.method, prompting=args.prompting, split=args.split)
    return name


def main(argv=None):
    args = parse_args(argv)
    cli.setup(args)
    run(args)


if __name__ == "__main__":
    cli.main_guard(main)
