"""A stage-4 decode as a whole process, with and without scripts/demo_settings.sh's glibc malloc thresholds: wall
time per run and token identity.

    python bench/malloc_env.py                                     # base decode of the demo_polar tuning split
    python bench/malloc_env.py \\
        --value_model runs/polar/seed0/trained_model/value_model_smollm2_135M_demo_polar_0.001_td1_vf0.1_es

Each round runs inference_intervention.py (the 100 tuning prompts, batches of 50, 40 new tokens, greedy) once with
the environment as it is and once with MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_ and MALLOC_TOP_PAD_ set, each
into a fresh output folder; with --value_model it decodes RE-Control at --step_size and --num_updates instead. The
process's own time counts (imports, model load, decode), since the variable acts from the process's start. Medians
over rounds after one warm-up round, OMP_NUM_THREADS = --threads. Writes bench/malloc_env.{json,md}.
"""
import os
import subprocess
import sys
import tempfile

# run as a file outside the repository root (python DIR/FILE.py): the root holds utils
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import (  # noqa: E402
    ROOT,
    command_line,
    decode_bench_parser,
    environment_lines,
    interleaved,
    median,
    record,
    write_results,
)

HERE = os.path.dirname(os.path.abspath(__file__))
MALLOC = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "4294967296",
          "MALLOC_TOP_PAD_": "268435456"}  # as scripts/demo_settings.sh


def parse_args():
    parser = decode_bench_parser(__doc__, os.path.join(HERE, "malloc_env"), 3, "OMP_NUM_THREADS of each run")
    parser.add_argument("--value_model", type=str, default=None, help="decode RE-Control with this value model "
                        "(default: base)")
    parser.add_argument("--step_size", type=float, default=3.0, help="RE-Control's step size (with --value_model)")
    parser.add_argument("--num_updates", type=int, default=10, help="RE-Control's number of updates")
    return parser.parse_args()


def main():
    args = parse_args()
    import torch
    torch.set_num_threads(args.threads)  # this process's, for the header: each run gets OMP_NUM_THREADS
    stage4 = [sys.executable, os.path.join(ROOT, "inference_intervention.py"), "--model_name", "smollm2_135M",
              "--dataset_name", args.dataset_name, "--split", args.split, "--max_new_tokens", "40",
              "--batch_size", "50"]
    if args.value_model:
        stage4 += ["--use_intervention", "True", "--value_model", os.path.abspath(args.value_model),
                   "--step_size", str(args.step_size), "--num_updates", str(args.num_updates)]
    else:
        stage4 += ["--use_intervention", "False"]
    plain = {k: v for k, v in os.environ.items() if k not in MALLOC}
    plain.update(OMP_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                 TOKENIZERS_PARALLELISM="false")
    scratch = tempfile.mkdtemp(prefix="malloc_env_")

    def run(env, tag):
        count = [0]

        def once():
            count[0] += 1
            out = os.path.join(scratch, f"{tag}{count[0]}")
            subprocess.run(stage4 + ["--output_dir", out], env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            folder = os.path.join(out, "response")
            name = next(f for f in sorted(os.listdir(folder)) if not f.endswith(".meta.json"))
            with open(os.path.join(folder, name), "rb") as f:
                return f.read()
        return once

    variants = {"as is": run(plain, "plain"), "malloc thresholds": run({**plain, **MALLOC}, "malloc")}
    times, outputs, _ = interleaved(variants, args.repeats)
    same = all(out == outputs["as is"][0] for outs in outputs.values() for out in outs)
    ratio = median([a / b for a, b in zip(times["malloc thresholds"], times["as is"])])
    records = [record(f"{name}: seconds per run", round(median(t), 2), unit="s") for name, t in times.items()]
    records += [record("malloc thresholds / as is: time ratio (median of rounds)", round(ratio, 3)),
                record("answers identical", same, target=True, better="higher")]
    what = f"RE-Control alpha {args.step_size:g}, n {args.num_updates}" if args.value_model else "base"
    header = environment_lines() + [f"- inference_intervention.py, {what}, {args.dataset_name}/{args.split}, "
                                    f"batches of 50, 40 new tokens, greedy, OMP_NUM_THREADS={args.threads}; "
                                    f"{args.repeats} rounds after 1 warm-up",
                                    f"- command: `{command_line()}`"]
    write_results(records, args.out, header)


if __name__ == "__main__":
    main()
