"""Export a run folder's scored runs as committed per-prompt files (utils/results.py): one JSON per run.

    python scripts/export_per_prompt.py --output_dir runs/demo --to results/per_prompt/demo
    python scripts/export_per_prompt.py --output_dir runs/replicate/seed0 --to results/per_prompt/replicate/seed0

Each file holds the prompt ids, the reward under each scorer, length, rep-n, diversity and coherence per prompt, the
run's settings and the value model's sha256: every paired figure can be recomputed from them.
"""
import os
import sys

# run as a file outside the repository root (python DIR/FILE.py): the root holds utils
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils import cli  # noqa: E402
from utils.results import export_folder  # noqa: E402


def parse_args(argv=None):
    parser = cli.make_parser(__doc__)
    parser.add_argument("--output_dir", type=str, required=True, help="the run folder (stages 4-6 wrote it)")
    parser.add_argument("--to", type=str, required=True, help="the folder to write one {run}.json per run into")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    written = export_folder(args.output_dir, args.to)
    print(f"{len(written)} per-prompt files -> {args.to}")


if __name__ == "__main__":
    cli.main_guard(main)
