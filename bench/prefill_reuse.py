"""A sweep cell with and without prefill reuse (utils/prefill.py): time per cell and token identity.

    python bench/prefill_reuse.py                 # SmolLM2-135M, the 100 demo_polar tuning prompts, 40 tokens

Two variants answer the tuning split as a sweep cell does (length-sorted batches of 50, greedy, 40 new tokens):
RE-Control with a value model (random, untrained: the cost of an edit does not depend on what it learned; 2 layers,
--value_width wide), and the same on a second copy of the model whose prefills are kept and reused (the warm-up
round keeps them). Each round runs the two in turn; one torch thread; medians over rounds after one warm-up round.
Writes bench/prefill_reuse.{json,md}.

    python bench/prefill_reuse.py --value_width 576 --out bench/prefill_reuse_576   # the demo's value-model width
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
    interleaved,
    malloc_for_timing,
    median,
    open_split,
    record,
    write_results,
)
from utils.engines import Edit, HFEngine  # noqa: E402
from utils.generation import length_sorted_batches  # noqa: E402
from utils.models import hidden_size, load_model_and_tokenizer, resolve_model  # noqa: E402
from utils.prefill import PrefillReuse  # noqa: E402
from utils.value_model import ValueModel  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args():
    parser = decode_bench_parser(__doc__, os.path.join(HERE, "prefill_reuse"), 2)
    parser.add_argument("--batch_size", type=int, default=50, help="prompts per generate call (the sweeps' 50)")
    parser.add_argument("--new_tokens", type=int, default=40, help="max new tokens (the demo's 40)")
    parser.add_argument("--value_width", type=int, default=4096,
                        help="the random value model's hidden width (the paper's 4096; the demo's is the LLM's, 576)")
    return parser.parse_args()


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    malloc_for_timing()
    model, tokenizer, prompts, add_special = open_split(args)
    batches = [[prompts[i] for i in batch]
               for batch in length_sorted_batches(prompts, tokenizer, args.batch_size, add_special)]
    copy = load_model_and_tokenizer(resolve_model("smollm2_135M"), "cpu", "float32")[0]
    engines = {"plain": HFEngine(model, tokenizer, add_special), "reused": HFEngine(copy, tokenizer, add_special)}
    torch.manual_seed(0)
    edit = Edit(ValueModel(hidden_size(model), args.value_width, 2), 3.0, 10)
    reuse = PrefillReuse(engines["reused"].model, 2 << 30)

    def cell(engine):
        def run():
            with engine.editing(edit):
                return [engine.decode(b, args.new_tokens) for b in batches]
        return run

    variants = {"re_control": cell(engines["plain"]), "re_control, prefill reused": cell(engines["reused"])}
    with reuse:
        times, outputs, _ = interleaved(variants, args.repeats)
    same = all(out == outputs["re_control"][0] for out in outputs["re_control, prefill reused"])
    cell_s = {name: median(t) for name, t in times.items()}
    ratio = median([a / b for a, b in zip(times["re_control, prefill reused"], times["re_control"])])
    records = [record(f"{name}: seconds per cell", round(s, 2), unit="s") for name, s in cell_s.items()]
    records += [record("prefill reused / not: time ratio (median of rounds)", round(ratio, 3)),
                record("replayed prefills", reuse.hits, unit="batches", better="higher"),
                record("prefill reused: answers identical", same, target=True, better="higher")]
    header = environment_lines() + [f"- {len(prompts)} prompts of {args.dataset_name}/{args.split}, batches of "
                                    f"{args.batch_size}, up to {args.new_tokens} new tokens, greedy; "
                                    f"a {args.value_width}-wide value model; {args.repeats} rounds after 1 warm-up",
                                    f"- command: `{command_line()}`"]
    write_results(records, args.out, header)


if __name__ == "__main__":
    main()
