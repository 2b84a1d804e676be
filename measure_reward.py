"""Stage 5: average reward of a run's responses, scored by the same reward backends as stage 2.

The paper's command line (GPU, hub access):
    python measure_reward.py --out_file llama3_8B_shp_0.001_30_1.0 --model_name llama3_8B --dataset_name shp \\
        --reward_model openbmb/UltraRM-13b

The embedded offline default, with the paired difference to the base run:
    python measure_reward.py --out_file smollm2_135M_demo_0.001_10_3.0 --reward_model vader \\
        --baseline smollm2_135M_demo_base

Each generation is cut where the model starts the user's next turn ('Human:' / 'User:'), re-joined with its prompt,
and scored. Writes final_reward/{out_file}.json: average, standard error, count and every reward.
"""

from utils import cli
from utils.io import (
    load_records,
    load_reward_record,
    output_path,
    response_path,
    run_settings,
    save_json,
    write_sidecar,
)
from utils.metrics import cut_at_next_turn, reward_result
from utils.rewards import load_reward_model
from utils.runs import BatchRun, refuse_overwrite


def parse_args(argv=None):
    parser = cli.make_parser(__doc__)
    parser.add_argument("--out_file", type=str, required=True, help="run name: scores response/{out_file}.json")
    parser.add_argument("--model_name", type=str, default="smollm2_135M", help="the policy LLM (for the record)")
    parser.add_argument("--dataset_name", type=str, default="demo", help="data set name (for the record)")
    parser.add_argument("--baseline", type=str, default=None,
                        help="run name of a baseline already scored here: also report the paired difference")
    cli.add_reward_stage_args(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cli.setup(args)
    out = output_path(args.output_dir, "reward", args.out_file)
    settings = run_settings(args)
    refuse_overwrite(out, settings, args.overwrite)
    # ------------------------------------------------------------------------------------------------------ load
    records = load_records(response_path(args.output_dir, args.out_file), "inference_intervention.py")
    baseline = None
    if args.baseline:
        baseline = load_reward_record(output_path(args.output_dir, "reward", args.baseline),
                             stage_hint=f"measure_reward.py --out_file {args.baseline}")
    reward_model = load_reward_model(args.reward_model, args.device, args.dtype, args.batch_size,
                                     args.trust_remote_code)
    # ------------------------------------------------------------------------------------------------------ run
    answers = [cut_at_next_turn(r["results"]) for r in records]
    run, rewards = reward_model.score_run([r.get("conversation", r["prompt"]) for r in records], answers,
                                          lambda n: BatchRun(out, settings, n, args.overwrite))
    if rewards is None:
        return  # another process writes the result
    try:
        result = reward_result(args.out_file, args.reward_model, rewards, baseline)
    except ValueError as err:
        raise cli.UsageError(f"--baseline {args.baseline}: {err}")
    print(f"{args.out_file}: average reward {result['average_reward']:.4f} ± {result['standard_error']:.4f} "
          f"(n = {len(rewards)}, {args.reward_model})")
    if baseline is not None:
        diff, diff_se = result["paired_difference"], result["paired_standard_error"]
        print(f"  vs {args.baseline} ({baseline['average_reward']:.4f}): difference {diff:+.4f} ± {diff_se:.4f} "
              f"(paired SE; {diff / diff_se if diff_se else float('nan'):.2f} SE)")
    # ------------------------------------------------------------------------------------------------------ save
    save_json(result, out)
    write_sidecar(out, args, settings)
    run.finish()


if __name__ == "__main__":
    cli.main_guard(main)
