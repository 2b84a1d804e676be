"""What a gated edit costs on the HF engine: base, RE-Control on every row, and the two gates, same prompts and length.

    python bench/gate_cost.py                     # SmolLM2-135M, 50 demo_polar tuning prompts, 40 tokens, 3 rounds

Four variants generate exactly --new_tokens tokens (eos masked until the last step, so every variant does the same
LLM work) for the first --limit prompts of the split in one batch, greedy: no edit; RE-Control (alpha 3, n 10) on
every row; the same with the value gate (V(o_t) < --value_tau) and with the entropy gate (next-token entropy >
--entropy_tau nats). The value model is random with the demo's shape (the LLM's width, 2 layers): an edit's cost does
not depend on what it learned, and the gates' tallies report the fraction of rows they edited. One torch thread;
each round runs the four in turn; medians over rounds after one warm-up round. Writes bench/gate_cost.{json,md}.
"""
import os
import sys

import torch

# run as a file outside the repository root (python DIR/FILE.py): the root holds utils
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import (  # noqa: E402
    command_line,
    decode_bench_parser,
    environment_lines,
    forced_config,
    interleaved,
    malloc_for_timing,
    median,
    open_split,
    record,
    write_results,
)
from utils.generation import generate_batch  # noqa: E402
from utils.intervention import Gate, ValueIntervention, new_tally  # noqa: E402
from utils.models import hidden_size  # noqa: E402
from utils.value_model import ValueModel  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args():
    parser = decode_bench_parser(__doc__, os.path.join(HERE, "gate_cost"), 3)
    parser.add_argument("--limit", type=int, default=50, help="prompts, decoded as one batch (the sweeps' 50)")
    parser.add_argument("--new_tokens", type=int, default=40, help="tokens generated per row (the demo's 40)")
    parser.add_argument("--entropy_tau", type=float, default=2.0, help="the entropy gate's threshold (nats)")
    parser.add_argument("--value_tau", type=float, default=0.0, help="the value gate's threshold")
    return parser.parse_args()


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    malloc_for_timing()
    model, tokenizer, prompts, add_special = open_split(args, args.limit)
    config = forced_config(model, tokenizer, args.new_tokens)
    torch.manual_seed(0)
    value_model = ValueModel(hidden_size(model), hidden_size(model), 2)
    gates = {"every row": None, f"value < {args.value_tau:g}": Gate("value", args.value_tau),
             f"entropy > {args.entropy_tau:g}": Gate("entropy", args.entropy_tau)}
    tallies = {name: new_tally() for name, gate in gates.items() if gate is not None}

    def generate():
        return generate_batch(model, tokenizer, prompts, config, add_special)[1]

    def edited(name):
        def run():
            with ValueIntervention(model, value_model, 3.0, 10, gate=gates[name], tally=tallies.get(name)):
                return generate()
        return run

    variants = {"base": generate, **{f"RE-Control, {name}": edited(name) for name in gates}}
    times, _, cpu_times = interleaved(variants, args.repeats)
    seconds = {name: median(t) for name, t in times.items()}
    every = "RE-Control, every row"
    records = [record(f"{name}: seconds per batch", round(s, 2), unit="s") for name, s in seconds.items()]
    for name in variants:
        if name != every:
            ratio = median([a / b for a, b in zip(times[name], times[every])])
            records.append(record(f"{name} / RE-Control on every row: time ratio (median of rounds)", round(ratio, 3)))
    records += [record(f"{name}: fraction of rows edited", round(tally["edited"] / tally["rows"], 3), better="neither")
                for name, tally in tallies.items()]
    cpu = {name: round(median(t), 2) for name, t in cpu_times.items()}
    header = environment_lines() + [f"- {len(prompts)} prompts of {args.dataset_name}/{args.split} in one batch, "
                                    f"exactly {args.new_tokens} new tokens, greedy; a random {hidden_size(model)}-wide "
                                    f"2-layer value model, alpha 3, n 10; {args.repeats} rounds after 1 warm-up",
                                    f"- CPU seconds per batch (medians): {cpu}",
                                    f"- command: `{command_line()}`"]
    write_results(records, args.out, header)


if __name__ == "__main__":
    main()
