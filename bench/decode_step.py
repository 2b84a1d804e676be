"""What bounds the demo's wall time: the time of one decoding step of SmolLM2-135M (float32, KV cache of a 60-token
prompt) against the batch size and the thread count, and the time of the prompt's prefill.

    python bench/decode_step.py                  # threads 1 and 2, batches 1, 8, 25, 50, 100; medians of 5 rounds
    python bench/decode_step.py --out bench/decode_step   # also writes bench/decode_step.{json,md}

If a step at batch 50 costs several times a step at batch 1 and two threads halve it, decoding is bound by arithmetic,
not by Python or memory: only less work (fewer or shorter rollouts, a shared prefill) makes the demo faster.
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=str, default="1,2", help="torch thread counts to time")
    parser.add_argument("--batches", type=str, default="1,8,25,50,100", help="batch sizes to time")
    parser.add_argument("--prompt_tokens", type=int, default=60, help="tokens in the cached prompt")
    parser.add_argument("--steps", type=int, default=10, help="decoding steps per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (the median is reported)")
    parser.add_argument("--out", type=str, default=None, help="write OUT.json and OUT.md")
    args = parser.parse_args(argv)
    import torch

    from utils.models import load_model_and_tokenizer, resolve_model
    model, _ = load_model_and_tokenizer(resolve_model("smollm2_135M", None, None), device="cpu", dtype="float32")
    model.eval()
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        for batch in [int(b) for b in args.batches.split(",")]:
            ids = torch.randint(100, 1000, (batch, args.prompt_tokens))
            steps, prefills = [], []
            with torch.no_grad():
                for _ in range(args.rounds):
                    start = time.perf_counter()
                    past = model(ids, use_cache=True).past_key_values
                    prefills.append(time.perf_counter() - start)
                    token = torch.randint(100, 1000, (batch, 1))
                    start = time.perf_counter()
                    for _ in range(args.steps):
                        past = model(token, past_key_values=past, use_cache=True).past_key_values
                    steps.append((time.perf_counter() - start) / args.steps)
            row = {"threads": threads, "batch": batch, "step_s": statistics.median(steps),
                   "prefill_s": statistics.median(prefills)}
            row["tokens_per_s"] = batch / row["step_s"]
            rows.append(row)
            print(f"threads {threads} batch {batch:4d}: step {row['step_s'] * 1000:7.1f} ms "
                  f"({row['tokens_per_s']:6.1f} tokens/s), prefill of {args.prompt_tokens} tokens "
                  f"{row['prefill_s'] * 1000:7.1f} ms", flush=True)
    if args.out:
        with open(args.out + ".json", "w") as f:
            json.dump({"prompt_tokens": args.prompt_tokens, "rows": rows}, f, indent=1)
        lines = ["| threads | batch | decoding step (ms) | tokens/s | prefill (ms) |", "|---|---|---|---|---|"]
        lines += [f"| {r['threads']} | {r['batch']} | {r['step_s'] * 1000:.1f} | {r['tokens_per_s']:.1f} | "
                  f"{r['prefill_s'] * 1000:.1f} |" for r in rows]
        with open(args.out + ".md", "w") as f:
            f.write("\n".join(lines) + f"\n\nSmolLM2-135M float32, a {args.prompt_tokens}-token prompt in the KV "
                    f"cache, medians of {args.rounds} rounds of {args.steps} steps. `python bench/decode_step.py "
                    f"--out bench/decode_step`.\n")


if __name__ == "__main__":
    main()
