"""An estimate of bench/vllm_throughput.py's run time from its matrix-product work and how fast one core does bare
fp32 matrix products of one of those shapes: work / rate. An estimate, not a bound: one product's speed stands for
every product's, and attention, norms and sampling are left out.

    python bench/matmul_bound.py        # one torch thread, as the throughput bench
"""
import os
import statistics
import sys
import time
from types import SimpleNamespace

import torch

# run as a file outside the repository root (python DIR/FILE.py): the root holds utils
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.data import load_prompts  # noqa: E402
from utils.models import embedded_model_folder, load_policy_tokenizer, resolve_model  # noqa: E402

NUM_PROMPTS, NEW_TOKENS, BATCH = 100, 40, 50  # bench/vllm_throughput.py's defaults


def gemm_rate(d, ffn, repeats=5):
    """Median GFLOP/s of [BATCH, d] x [d, ffn] products (the MLP's shape), one thread."""
    a, b = torch.randn(BATCH, d), torch.randn(d, ffn)
    rates = []
    for _ in range(repeats):
        n = 400
        start = time.perf_counter()
        for _ in range(n):
            torch.mm(a, b)
        rates.append(2 * BATCH * d * ffn * n / (time.perf_counter() - start) / 1e9)
    return statistics.median(rates)


def main():
    torch.set_num_threads(1)
    from transformers import AutoConfig
    config = AutoConfig.from_pretrained(embedded_model_folder())
    d, ffn, layers, vocab = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    kv = d * config.num_key_value_heads // config.num_attention_heads
    body = layers * (2 * d * d + 2 * d * kv + 3 * d * ffn)  # q, o; k, v; gate, up, down
    head = d * vocab
    spec = resolve_model("smollm2_135M")
    tokenizer = load_policy_tokenizer(spec)
    args = SimpleNamespace(dataset_name="demo", data_file=None, dataset_path=None, max_prompt_tokens=512,
                           limit=NUM_PROMPTS)
    prompts = load_prompts(args, "test", spec, tokenizer)
    prompt_tokens = sum(len(tokenizer(p["prompt"], add_special_tokens=not spec.chat_template)["input_ids"])
                        for p in prompts)
    # prefill: every prompt token through the body, the last one through lm_head; then NEW_TOKENS - 1 decoding steps
    work = 2 * (prompt_tokens * body + len(prompts) * head + len(prompts) * (NEW_TOKENS - 1) * (body + head))
    rate = gemm_rate(d, ffn)
    print(f"{len(prompts)} prompts, {prompt_tokens} prompt tokens, {NEW_TOKENS} new tokens each: "
          f"{work / 1e12:.2f} TFLOP of matrix products")
    print(f"bare fp32 torch.mm [{BATCH}, {d}] x [{d}, {ffn}], one thread: {rate:.0f} GFLOP/s (median of 5)")
    print(f"estimate (matrix products only): {work / rate / 1e9:.1f} s for the run")


if __name__ == "__main__":
    main()
