"""The results table: one row per run, in the layout of the paper's Table 1.

    python make_table.py --model_name smollm2_135M --dataset_name demo --output_dir runs/demo

Gathers final_reward/ (stage 5), evaluations/ (stage 6), gpt-4-evaluations/ (stage 7) and each run's generation
time (response/RUN.meta.json) for the runs named {m}_{d}_* that answered the base run's split (a sweep's tuning
runs are left out). Writes results/{m}_{d}_table.md and .csv, and
results/{m}_{d}_rewards.png with the runs' reward distributions. The reward difference to the base run is paired
(same prompts) with its standard error.
"""
from utils import cli
from utils.configs import TableConfig
from utils.io import output_path, output_stem
from utils.names import model_tag
from utils.table import gather, notes, plot_rewards, write_table


def build_parser():
    return cli.build_parser(__doc__, TableConfig)


def parse_args(argv=None):
    return cli.parse_config(build_parser(), TableConfig, argv)


def main(argv=None):
    args = parse_args(argv)
    prefix = f"{model_tag(args.model_name)}_{args.dataset_name}_"
    base_name = args.base or prefix + "base"
    # ------------------------------------------------------------------------------------------------------ load
    rows = gather(args.output_dir, prefix, base_name)
    judge_note = notes(rows, args.dataset_name)
    # ------------------------------------------------------------------------------------------------------ save
    stem = output_stem(args.output_dir, "results", f"{prefix}table")
    write_table(rows, stem, judge_note)
    plot_rewards(rows, output_path(args.output_dir, "results", f"{prefix}rewards", "png"))
    print(f"-> {stem}.md, {stem}.csv, {output_path(args.output_dir, 'results', prefix + 'rewards', 'png')}")


if __name__ == "__main__":
    cli.main_guard(main)
