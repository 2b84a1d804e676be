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
a value model trained with other settings than the paper's adds them after {value_lr} (e.g. _td1_vf0.1_es, as its
file name does), and one passed by --value_model names the run by its file name;
--prompting True adds the paper's alignment prompt and '_prompting' to the name. Each file has a .meta.json beside
it with the settings and the wall time.
"""
from utils import cli
from utils.stages.stage4_inference import run_inference_intervention


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
                             "trained_model/value_model_{m}_{d}_{value_lr}[_variant] and names the output (several "
                             "variants: pass --value_model)")
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


def main(argv=None):
    args = parse_args(argv)
    cli.setup(args)
    run_inference_intervention(args)


if __name__ == "__main__":
    cli.main_guard(main)
