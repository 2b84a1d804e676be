"""Stage 4: generate test responses, with RE-Control editing o_t uphill on the value model at every decoding step.

The paper's command line (GPU, hub access):
    python inference_intervention.py --model_name llama3_8B --dataset_name shp --use_intervention True \\
        --lr 1.0 --epochs 30 --value_lr 0.001

The embedded offline default, base and RE-Control:
    python inference_intervention.py --model_name smollm2_135M --dataset_name demo --use_intervention False
    python inference_intervention.py --model_name smollm2_135M --dataset_name demo --use_intervention True \\
        --value_lr 0.001 --lr 3.0 --epochs 10

Choosing alpha and n on a tuning split first (sweep.py), then reading the choice:
    python inference_intervention.py --use_intervention True --value_lr 0.001 \\
        --settings_from results/smollm2_135M_demo_sweep.json

--lr is the step size alpha, --epochs the number of updates n (the original's names; --step_size and --num_updates
are the same flags). Writes
response/{m}_{d}_{value_lr}_{epochs}_{lr}.json (RE-Control), response/{m}_{d}_base.json (no intervention);
--prompting True adds the paper's alignment prompt and '_prompting' to the name. Each file has a .meta.json beside
it with the settings and the wall time.
"""
import contextlib

from utils import cli
from utils.data import ALIGNMENT_PROMPT, load_prompts
from utils.generation import answer_prompts, decode_rows, generate_batch, generation_config
from utils.intervention import ValueIntervention, default_settings
from utils.io import model_tag, response_path, run_settings, value_model_stem
from utils.models import config_hidden_size, hidden_size, load_model_and_tokenizer, load_policy_tokenizer, resolve_model
from utils.runs import refuse_overwrite
from utils.sweep import read_choice
from utils.value_model import check_value_model, load_value_model


def parse_args(argv=None):
    parser = cli.make_parser(__doc__)
    cli.add_policy_stage_args(parser, batch_size=16, max_new_tokens=128)
    parser.add_argument("--use_intervention", type=cli.str2bool, default=False,
                        help="edit hidden states with the value model (True/False)")
    parser.add_argument("--lr", "--step_size", dest="lr", type=cli.nonnegative_float, default=None,
                        help="step size alpha of each update (default: the paper's value for the setting; for "
                             "smollm2_135M on demo, the tuning split's choice, 3.0)")
    parser.add_argument("--epochs", "--num_updates", dest="epochs", type=cli.nonnegative_int, default=None,
                        help="number of updates n per decoding step (default: the paper's value for the setting; "
                             "10 for smollm2_135M on demo)")
    parser.add_argument("--value_lr", type=cli.positive_float, default=1e-4,
                        help="learning rate the value model was trained with: picks "
                             "trained_model/value_model_{m}_{d}_{value_lr} and names the output")
    parser.add_argument("--value_model", type=str, default=None,
                        help="path of a value model (without extension) to use instead of the one --value_lr picks")
    parser.add_argument("--prompting", type=cli.str2bool, default=False,
                        help="prepend the paper's alignment prompt ('RE-Control + Prompting', or 'Prompting' "
                             "without intervention)")
    parser.add_argument("--settings_from", type=str, default=None,
                        help="a sweep result (results/{m}_{d}_sweep.json from sweep.py): take alpha and n from the "
                             "cell it chose on its tuning split, instead of --lr and --epochs")
    parser.add_argument("--split", type=str, default="test", help="data split to answer")
    parser.add_argument("--use_cache", type=cli.str2bool, default=True, help="use the KV cache while generating")
    return parser.parse_args(argv)


def run_name(args, m):
    if args.use_intervention:
        name = f"{m}_{args.dataset_name}_{args.value_lr}_{args.epochs}_{args.lr}"
    else:
        name = f"{m}_{args.dataset_name}_base" if not args.prompting else f"{m}_{args.dataset_name}"
    return name + ("_prompting" if args.prompting else "")


def resolve_setting(args):
    """alpha (args.lr) and n (args.epochs): from --settings_from, else the flags, else the setting's defaults."""
    if args.settings_from:
        if args.lr is not None or args.epochs is not None:
            raise cli.UsageError("pass either --settings_from or --lr/--epochs, not both")
        setting, _ = read_choice(args.settings_from, "re_control", args.model_name)
        args.lr, args.epochs = setting["step_size"], setting["num_updates"]
        print(f"step size {args.lr:g} and {args.epochs} updates, as chosen in {args.settings_from}")
    default_lr, default_epochs = default_settings(args.model_name, args.dataset_name)
    args.lr = default_lr if args.lr is None else args.lr
    args.epochs = default_epochs if args.epochs is None else args.epochs


def run(args, model=None, tokenizer=None):
    """Stage 4 on parsed flags, with the policy already loaded if given; returns the run's name."""
    resolve_setting(args)
    m = model_tag(args.model_name)
    name = run_name(args, m)
    out = response_path(args.output_dir, name)
    settings = run_settings(args)
    refuse_overwrite(out, settings, args.overwrite)
    # ------------------------------------------------------------------------------------------------------ load
    spec = resolve_model(args.model_name, args.chat_template)
    value_model = None
    if args.use_intervention:
        stem = args.value_model or value_model_stem(args.output_dir, m, args.dataset_name, args.value_lr)
        value_model = load_value_model(stem.removesuffix(".safetensors").removesuffix(".pth"))
        check_value_model(value_model, args.model_name, config_hidden_size(spec, args.trust_remote_code))
    tokenizer = tokenizer or load_policy_tokenizer(spec, args.trust_remote_code)
    prompts = load_prompts(args, args.split, spec, tokenizer, ALIGNMENT_PROMPT if args.prompting else None)
    if model is None:
        model, tokenizer = load_model_and_tokenizer(spec, args.device, args.dtype, args.trust_remote_code,
                                                    args.device_map, tokenizer)
    # ------------------------------------------------------------------------------------------------------ run + save
    config = generation_config(model, tokenizer, args.max_new_tokens, use_cache=args.use_cache)
    add_special = not spec.chat_template
    hook = None
    if value_model is not None:
        check_value_model(value_model, args.model_name, hidden_size(model))
        hook = ValueIntervention(model, value_model.to(model.device), args.lr, args.epochs)

    def decode_batch(texts, _conversations):
        return decode_rows(tokenizer, *generate_batch(model, tokenizer, texts, config, add_special))
    with hook or contextlib.nullcontext():
        answer_prompts(args, prompts, tokenizer, add_special, decode_batch,
                       f"generating ({'RE-Control' if hook else 'base'})", out, settings,
                       method="RE-Control" if hook else "base", step_size=args.lr if hook else None,
                       num_updates=args.epochs if hook else None, prompting=args.prompting, split=args.split,
                       value_model=value_model.config if value_model else None)
    return name


def main(argv=None):
    args = parse_args(argv)
    cli.setup(args)
    run(args)


if __name__ == "__main__":
    cli.main_guard(main)
