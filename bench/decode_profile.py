"""Where a sweep cell's decoding time goes on this CPU: one batch of 50 prompts, 40 new tokens, greedy, as the
sweeps and test runs decode them (`--batch_size 50`, torch's 2 threads).

    python bench/decode_profile.py                # demo_polar's tuning split, 2 threads, 3 rounds after a warm-up

Times, interleaved in each round: `generate` as the pipeline runs it (utils/attention.py: grouped-query attention
without copying the K/V heads); the same with transformers' own sdpa path, which repeats the K/V heads under a padding
mask, and whether the two give bit-identical answers and hidden states; the prefill alone (50 left-padded prompts);
the same model calls as `generate` by hand (prefill, then 40 single-token steps on the KV cache, the padding mask grown
each step); and those 40 steps without a padding mask (wrong for the padded rows, timed for what the mask costs). Then
one `generate` under torch's profiler: the operators with the most self CPU time.
Writes bench/decode_profile.{json,md}.
"""
import os
import sys

import torch

# run as a file outside the repository root (python DIR/FILE.py): the root holds utils
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # noqa: E402
from utils.generation import generate_batch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPEATED = "sdpa"  # transformers' own: K/V heads repeated under a mask


def parse_args():
    parser = common.decode_bench_parser(__doc__, os.path.join(HERE, "decode_profile"), 3)
    parser.set_defaults(threads=2)
    parser.add_argument("--limit", type=int, default=50, help="prompts, decoded as one batch (the sweeps' 50)")
    parser.add_argument("--new_tokens", type=int, default=40, help="tokens generated per row (the demo's 40)")
    parser.add_argument("--top", type=int, default=8, help="operators listed from the profile")
    return parser.parse_args()


@torch.no_grad()
def by_hand(model, enc, steps, padding_mask=True):
    """Prefill, then `steps` greedy single-token calls on the KV cache; returns the last logits."""
    mask = enc["attention_mask"]
    out = model(input_ids=enc["input_ids"], attention_mask=mask, use_cache=True, logits_to_keep=1)
    past, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
    for _ in range(steps):
        kwargs = {}
        if padding_mask:
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            kwargs["attention_mask"] = mask
        out = model(input_ids=token, past_key_values=past, use_cache=True, **kwargs)
        past, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
    return token


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    common.malloc_for_timing()
    model, tokenizer, prompts, add_special = common.open_split(args, args.limit)
    config = common.forced_config(model, tokenizer, args.new_tokens)
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special)
    enc = {k: enc[k] for k in ("input_ids", "attention_mask")}
    implementation = model.config._attn_implementation

    def with_attention(name, fn):
        def run():
            model.set_attn_implementation(name)
            try:
                return fn()
            finally:
                model.set_attn_implementation(implementation)
        return run

    def generate():
        return generate_batch(model, tokenizer, prompts, config, add_special)[1]

    variants = {"generate": generate,
                "prefill alone": lambda: by_hand(model, enc, 0),
                "prefill + steps by hand": lambda: by_hand(model, enc, args.new_tokens),
                "prefill + steps, no padding mask": lambda: by_hand(model, enc, args.new_tokens, padding_mask=False),
                "generate, K/V heads repeated": with_attention(REPEATED, generate)}
    times, outputs, _ = common.interleaved(variants, args.repeats)
    seconds = {name: common.median(t) for name, t in times.items()}
    same_answers = all(torch.equal(a, b) for a, b in zip(outputs["generate"], outputs["generate, K/V heads repeated"]))
    with torch.no_grad():
        states = model(**enc, output_hidden_states=True).hidden_states[-1]
        repeated = with_attention(REPEATED, lambda: model(**enc, output_hidden_states=True).hidden_states[-1])()
    same_states = torch.equal(states, repeated)

    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        generate()
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ops)

    def ratio(a, b, minus=None):  # median over rounds of (a - minus) / (b - minus)
        less = times[minus] if minus else [0.0] * len(times[a])
        return round(common.median([(x - m) / (y - m) for x, y, m in zip(times[a], times[b], less)]), 3)

    record = common.record
    records = [record(f"{name}: seconds", round(s, 2), unit="s") for name, s in seconds.items()]
    records += [
        record("prefill / generate by hand: time share",
               round(seconds["prefill alone"] / seconds["prefill + steps by hand"], 3), better="neither"),
        record("steps with / without the padding mask: time ratio (median of rounds)",
               ratio("prefill + steps by hand", "prefill + steps, no padding mask", minus="prefill alone")),
        record("generate / generate with the K/V heads repeated: time ratio (median of rounds)",
               ratio("generate", "generate, K/V heads repeated")),
        record("K/V heads repeated or not: answers and hidden states bit-identical", same_answers and same_states,
               better="neither"),
    ]
    records += [record(f"profile of one generate: {e.key}, share of self CPU time",
                       round(e.self_cpu_time_total / total, 3), better="neither") for e in ops[:args.top]]
    header = common.environment_lines() + [
        f"- {len(prompts)} prompts of {args.dataset_name}/{args.split} in one batch (padded to "
        f"{enc['input_ids'].shape[1]} tokens), exactly {args.new_tokens} new tokens, greedy; attention: "
        f"{implementation}; {args.repeats} rounds after 1 warm-up, medians",
        f"- command: `{common.command_line()}`"]
    print(common.write_results(records, args.out, header))


if __name__ == "__main__":
    main()
