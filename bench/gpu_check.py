"""GPU check: RE-Control and stage-1 capture overhead on a randomly initialised Llama-3-8B-shaped model in bf16.

From the repository root (bench/gpu_check.sh runs this with the venv's python):
    bash bench/gpu_check.sh                  # CUDA: -> bench/gpu_results.json, bench/gpu_results.md
    bash bench/gpu_check.sh --tiny           # small random config on CPU, a smoke test -> bench/gpu_results_tiny.*
    bash bench/gpu_check.sh --skip_original  # without the original all-positions autograd edit
    bash bench/gpu_check.sh --repeats 7
    bash bench/gpu_check.sh --skip_vllm      # without the vLLM pair (run only where vllm is installed anyway)

Settings: hidden 4096, 32 layers, 32 heads, 8 KV heads, intermediate 14336, vocab 128256, rope_theta 500000, built
directly in bfloat16 on cuda (no download); batch 16 random prompts of 180-220 tokens, left-padded; 128 new tokens
forced (min_new_tokens = max_new_tokens); greedy; use_cache. RE-Control: ValueIntervention(step 0.5, 30 updates) with
a random ValueModel(4096, 4096, 3); capture: ActivationCapture(float16); original: bench/original_edit.py (in bf16,
the model's dtype, as the original did, so its tokens are not expected to equal ours here). Median of --repeats rounds,
variants interleaved, one warm-up round, torch.cuda.synchronize() around every timing; then one pass per variant for
torch.cuda.max_memory_allocated. The paper reports RE-Control at 1.42x the base's time; the target here is <= 1.15x.

Where vllm is installed (bash scripts/setup.sh --vllm), two more variants in the same rounds: vllm_plain and
vllm_recontrol, utils.vllm_engine.VllmEngine on a model of the same shape with random weights (load_format "dummy":
only a config.json is written), the same prompt ids, all in one generate call (max_num_seqs = batch), the same
forced length, and the same value model, step size and updates. They give vllm_over_hf_throughput (tokens/s of
vllm_plain over plain) and recontrol_over_plain_time_vllm. vLLM compiles and captures CUDA graphs at start-up
(--vllm_enforce_eager skips both); its memory is its own process's, so the memory pass leaves it out.
"""
import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

# run as a file outside the repository root (python DIR/FILE.py): the root holds utils
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import (  # noqa: E402
    ROOT,
    command_line,
    environment_lines,
    forced_config,
    ids_tokenizer,
    interleaved,
    malloc_for_memory,
    median,
    peak_extra_mb,
    record,
    sync_for,
    write_results,
)
from bench.original_edit import OriginalEdit  # noqa: E402
from utils.intervention import ActivationCapture, ValueIntervention  # noqa: E402
from utils.value_model import ValueModel  # noqa: E402

STEP_SIZE, NUM_UPDATES = 0.5, 30
LLAMA3_8B = dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                 intermediate_size=14336, vocab_size=128256, rope_theta=500000.0, max_position_embeddings=8192,
                 rms_norm_eps=1e-5, bos_token_id=128000, eos_token_id=128001, pad_token_id=128001)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=1, num_key_value_heads=1, intermediate_size=128,
            vocab_size=512, max_position_embeddings=256, bos_token_id=0, eos_token_id=1, pad_token_id=1)
FULL_RUN = dict(device="cuda", batch_size=16, prompt_lengths=(180, 220), new_tokens=128)
TINY_RUN = dict(device="cpu", batch_size=4, prompt_lengths=(16, 24), new_tokens=8)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="small random config on CPU (smoke test)")
    parser.add_argument("--repeats", type=int, default=5, help="counted rounds; the median is reported")
    parser.add_argument("--skip_original", action="store_true", help="do not run the original edit")
    parser.add_argument("--skip_vllm", action="store_true", help="do not run the vLLM pair")
    parser.add_argument("--vllm_enforce_eager", action="store_true", help="vLLM without torch.compile/CUDA graphs")
    parser.add_argument("--vllm_gpu_memory_utilization", type=float, default=0.4,
                        help="vLLM's share of the GPU's memory (the HF model stays loaded beside it)")
    return parser.parse_args()


def build_model(config_kwargs, device, dtype):
    """A randomly initialised LlamaForCausalLM, created directly on `device` in `dtype` (no hub access)."""
    from transformers import AutoModelForCausalLM, LlamaConfig
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(LlamaConfig(**config_kwargs), dtype=dtype)
    return model.eval()


def start_vllm(args, config_kwargs, dtype, batch_size, max_len):
    """VllmEngine on random weights of the model's shape (load_format "dummy": a config.json, no weights written), or
    None with --skip_vllm or without vllm."""
    from utils.vllm_engine import VllmEngine, vllm_available
    if args.skip_vllm or not vllm_available():
        print("vLLM pair skipped: " + ("--skip_vllm" if args.skip_vllm else
                                       "vllm is not installed (bash scripts/setup.sh --vllm)"))
        return None
    import tempfile

    from transformers import LlamaConfig
    folder = tempfile.mkdtemp(prefix="gpu_check_llama_")
    LlamaConfig(**config_kwargs, architectures=["LlamaForCausalLM"]).save_pretrained(folder)  # not LlamaModel
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB, for --tiny on CPU
    return VllmEngine(folder, dtype=str(dtype).removeprefix("torch."), seed=0, max_model_len=max_len,
                      enforce_eager=args.vllm_enforce_eager or args.tiny,
                      gpu_memory_utilization=args.vllm_gpu_memory_utilization, max_num_seqs=batch_size,
                      load_format="dummy", skip_tokenizer_init=True, eos_token_ids=[config_kwargs["eos_token_id"]])


def random_prompts(batch_size, lengths, vocab_low, vocab_high, pad_id, device):
    """Random token ids, row lengths spread over `lengths`, left-padded: (input_ids, attention_mask)."""
    gen = torch.Generator().manual_seed(0)
    lo, hi = lengths
    sizes = [lo + round((hi - lo) * i / max(batch_size - 1, 1)) for i in range(batch_size)]
    ids = torch.full((batch_size, hi), pad_id, dtype=torch.long)
    mask = torch.zeros((batch_size, hi), dtype=torch.long)
    for row, n in enumerate(sizes):
        ids[row, hi - n:] = torch.randint(vocab_low, vocab_high, (n,), generator=gen)
        mask[row, hi - n:] = 1
    return ids.to(device), mask.to(device)


def main():
    args = parse_args()
    run = TINY_RUN if args.tiny else FULL_RUN
    device = torch.device(run["device"])
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run on a GPU machine, or pass --tiny for the CPU smoke test")
    if device.type == "cpu":
        torch.set_num_threads(1)
        malloc_for_memory()  # RSS-based peaks (timings of the smoke test do not matter)
    dtype = torch.bfloat16
    config_kwargs = TINY if args.tiny else LLAMA3_8B
    stem = os.path.join(ROOT, "bench", "gpu_results_tiny" if args.tiny else "gpu_results")

    model = build_model(config_kwargs, device, dtype)
    d = config_kwargs["hidden_size"]
    pad, eos = config_kwargs["pad_token_id"], config_kwargs["eos_token_id"]
    input_ids, attention_mask = random_prompts(run["batch_size"], run["prompt_lengths"], 2 if args.tiny else 1000,
                                               config_kwargs["vocab_size"] - (0 if args.tiny else 1000), pad, device)
    config = forced_config(model, ids_tokenizer(pad, eos), run["new_tokens"])
    torch.manual_seed(0)
    value_model = ValueModel(d, d, 3).eval()
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters, {dtype}, {device}; "
          f"prompts {tuple(input_ids.shape)} left-padded, {run['new_tokens']} new tokens")

    kept = {}

    @torch.no_grad()
    def plain():
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
        return out[:, input_ids.shape[1]:]

    def capture():
        with ActivationCapture(model, dtype=torch.float16) as cap:
            tokens = plain()
            kept["capture"] = cap.pop().nbytes
        return tokens

    def recontrol():
        with ValueIntervention(model, value_model, STEP_SIZE, NUM_UPDATES):
            return plain()

    def original():
        with OriginalEdit(model, value_model, STEP_SIZE, NUM_UPDATES):
            return plain()

    variants = {"plain": plain, "capture": capture, "recontrol": recontrol}
    if not args.skip_original:
        variants["original"] = original
    new_tokens = run["new_tokens"]
    engine = start_vllm(args, config_kwargs, dtype, run["batch_size"], input_ids.shape[1] + new_tokens)
    if engine is not None:
        prompt_ids = [ids[m.bool()].tolist() for ids, m in zip(input_ids.cpu(), attention_mask.cpu())]
        variants["vllm_plain"] = lambda: engine.generate(prompt_ids, new_tokens, min_new_tokens=new_tokens)
        variants["vllm_recontrol"] = lambda: engine.generate(prompt_ids, new_tokens, min_new_tokens=new_tokens,
                                                             value_model=value_model, step_size=STEP_SIZE,
                                                             num_updates=NUM_UPDATES)

    sync = sync_for(device)
    print(f"timing: {args.repeats} counted rounds + 1 warm-up, variants interleaved: {', '.join(variants)}")
    times, outputs, _ = interleaved(variants, args.repeats, sync=sync)
    for name, tokens in outputs.items():
        if name.startswith("vllm"):
            assert [len(row) for row in tokens[0]] == [run["new_tokens"]] * run["batch_size"], name
        else:
            assert tokens[0].shape == (run["batch_size"], run["new_tokens"]), (name, tokens[0].shape)
    med = {name: median(t) for name, t in times.items()}
    if engine is not None:
        engine.close()

    print("memory: each variant once")
    extra, peak_gb = {}, {}
    for name, fn in variants.items():
        if name.startswith("vllm"):
            continue  # vLLM's memory is its own process's
        _, extra[name] = peak_extra_mb(fn, device)
        if device.type == "cuda":
            peak_gb[name] = torch.cuda.max_memory_allocated() / 1024 ** 3
        print(f"  {name}: peak {extra[name]:.1f} MB above the memory before it"
              + (f", max_memory_allocated {peak_gb[name]:.2f} GB" if name in peak_gb else ""))

    records = [
        record("recontrol_over_plain_time", med["recontrol"] / med["plain"], 1.15, "x", "lower"),
        record("capture_over_plain_time", med["capture"] / med["plain"], 1.05, "x", "lower"),
        record("recontrol_over_plain_time_paired",
               median([r / p for r, p in zip(times["recontrol"], times["plain"])]), None, "x", "lower"),
    ]
    if "original" in variants:
        records += [record("original_over_plain_time", med["original"] / med["plain"], None, "x", "lower"),
                    record("original_over_recontrol_time", med["original"] / med["recontrol"], None, "x", "higher")]
    if engine is not None:
        records += [record("vllm_over_hf_throughput", med["plain"] / med["vllm_plain"], 2.0, "x", "higher"),
                    record("recontrol_over_plain_time_vllm", med["vllm_recontrol"] / med["vllm_plain"], 1.15, "x",
                           "lower")]
    records += [record(f"{name}_median_time", med[name], None, "s", "lower") for name in variants]
    unit = "MB" if device.type == "cuda" else "MB (RSS)"
    records += [record(f"{name}_peak_mem_extra", extra[name], None, unit, "lower") for name in extra]
    records += [record(f"{name}_max_memory_allocated", peak_gb[name], None, "GB", "lower") for name in peak_gb]
    records.append(record("capture_kept_bytes", kept["capture"], None, "bytes", "lower"))

    shape = ", ".join(f"{k} {v}" for k, v in config_kwargs.items() if not k.endswith("token_id"))
    header = [
        "# RE-Control GPU check" + (" (--tiny smoke test on CPU)" if args.tiny else ""),
        "",
        f"Command: `{command_line()}` (from the repository root)",
        "",
        f"- model: random LlamaForCausalLM ({shape}) in {dtype} on {device}",
        f"- batch {run['batch_size']} random prompts of {run['prompt_lengths'][0]}-{run['prompt_lengths'][1]} "
        f"tokens, left-padded; {run['new_tokens']} new tokens forced (min_new_tokens = max_new_tokens); greedy; "
        f"use_cache=True",
        f"- RE-Control: step size {STEP_SIZE}, {NUM_UPDATES} updates, ValueModel({d}, {d}, 3) random (seed 0); "
        "the paper's RE-Control/base time: 1.42x",
        f"- timing: median of {args.repeats} rounds, variants interleaved ({', '.join(variants)}), one uncounted "
        "warm-up round, synchronised; memory: one more pass per variant, peak minus memory just before",
    ] + ([f"- vLLM: utils.vllm_engine.VllmEngine, the same shape with random weights (load_format dummy), "
          f"{dtype}, all {run['batch_size']} prompts in one generate call, max_num_seqs {run['batch_size']}, "
          f"{'eager' if args.vllm_enforce_eager or args.tiny else 'torch.compile + CUDA graphs'}; the same value "
          f"model and edit (utils.intervention.edit_states on the rows that get logits)"] if engine else []) \
        + environment_lines(device)
    if args.tiny:
        header.insert(2, "A smoke test of the script: on a model this small the hooks' fixed costs dominate, so the "
                         "times, ratios and targets below mean nothing.\n")
    table = write_results(records, stem, header)
    print("\n" + table)
    print(f"\nwrote {os.path.relpath(stem, ROOT)}.json and .md")


if __name__ == "__main__":
    main()
