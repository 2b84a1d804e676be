"""GPU serving check: serve.py on a random Llama-3-8B-shaped model in bf16, with CUDA graphs and in eager mode.

Run by bench/gpu_check.sh after bench/gpu_check.py (or alone, from the repository root, with the vLLM extra):
    .venv/bin/python bench/gpu_serve_check.py           # CUDA -> bench/gpu_serve.json, bench/gpu_serve.md
    .venv/bin/python bench/gpu_serve_check.py --tiny    # CPU smoke test (both servers eager) -> bench/gpu_serve_tiny.*

The model of bench/gpu_check.py (random weights: load_format dummy, no tokenizer: token-id prompts), a random
ValueModel(4096, 4096, 3), the paper's Llama-3-8B setting for the edit (alpha 1.0, n 30). Two servers one after the
other: vLLM's default (torch.compile and CUDA graphs: enforce_eager off) and --enforce-eager. In each, --batch
concurrent requests (random prompts of 180-220 tokens, greedy, --new_tokens forced with min_tokens) plain and with
RE-Control, interleaved for --repeats rounds after a warm-up; the time of a batch until its last answer. Reports
whether the graphs server's tokens equal the eager server's (plain, and RE-Control: compute_logits, where the edit
runs, is outside the captured graphs) and RE-Control's time over plain under graphs (target <= 1.05).
"""
import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import ROOT, command_line, environment_lines, median, record, write_results  # noqa: E402
from bench.gpu_check import LLAMA3_8B, TINY  # noqa: E402

STEP_SIZE, NUM_UPDATES = 1.0, 30  # the paper's Llama-3-8B on SHP


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="small random config on CPU (smoke test)")
    parser.add_argument("--repeats", type=int, default=5, help="counted rounds; the median is reported")
    parser.add_argument("--batch", type=int, default=None, help="concurrent requests per batch (32; --tiny: 4)")
    parser.add_argument("--new_tokens", type=int, default=None, help="tokens per answer, forced (128; --tiny: 8)")
    parser.add_argument("--skip_vllm", action="store_true", help="do nothing (gpu_check.sh passes its flags on)")
    parser.add_argument("--gpu_memory_utilization", type=float, default=0.85, help="vLLM's share of the GPU")
    args = parser.parse_known_args()[0]
    args.batch = args.batch or (4 if args.tiny else 32)
    args.new_tokens = args.new_tokens or (8 if args.tiny else 128)
    return args


def serve(folder, stem, mode_flags, args, log_path):
    """serve.py started and answering: (process, openai client)."""
    import openai
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "serve.py", "--model_name", folder, "--value_model", f"random={stem}",
               "--max_num_updates", str(NUM_UPDATES), "--dtype", "bfloat16", "--host", "127.0.0.1", "--port",
               str(port), "--load-format", "dummy", "--skip-tokenizer-init", "--max-num-seqs", str(args.batch),
               "--max-model-len", "256" if args.tiny else "512", "--disable-uvicorn-access-log", *mode_flags]
    if not args.tiny:
        command += ["--gpu_memory_utilization", str(args.gpu_memory_utilization)]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   env=dict(os.environ, PYTHONPATH=ROOT, VLLM_CPU_KVCACHE_SPACE="1"))
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=900)
    deadline = time.time() + 1200  # torch.compile and graph capture of an 8B model take minutes
    while True:
        if process.poll() is not None:
            sys.exit(f"serve.py exited with {process.returncode}; see {log_path}")
        try:
            client.models.list()
            return process, client
        except openai.APIConnectionError:
            if time.time() > deadline:
                process.kill()
                sys.exit(f"serve.py did not answer in time; see {log_path}")
            time.sleep(2)


def batch(client, model, prompts, new_tokens, xargs):
    """(tokens of every answer, seconds until the last one) for the prompts sent together."""
    def one(ids):
        extra = {"min_tokens": new_tokens, "return_token_ids": True, **({"vllm_xargs": xargs} if xargs else {})}
        reply = client.completions.create(model=model, prompt=ids, max_tokens=new_tokens, temperature=0,
                                          extra_body=extra)
        return list(reply.choices[0].token_ids)
    start = time.time()
    with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
        tokens = list(pool.map(one, prompts))
    return tokens, time.time() - start


def main():
    args = parse_args()
    if args.skip_vllm:
        return
    import torch
    from transformers import LlamaConfig

    from utils.value_model import ValueModel, save_value_model
    from utils.vllm_engine import vllm_available
    if not vllm_available():
        sys.exit("serving check skipped: vllm is not installed (bash scripts/setup.sh --vllm)")
    if not args.tiny and not torch.cuda.is_available():
        sys.exit("no CUDA device: run on a GPU machine, or pass --tiny for the CPU smoke test")
    config = TINY if args.tiny else LLAMA3_8B
    work = tempfile.mkdtemp(prefix="gpu_serve_")
    folder = os.path.join(work, "llama")
    LlamaConfig(**config, architectures=["LlamaForCausalLM"]).save_pretrained(folder)
    torch.manual_seed(0)
    d = config["hidden_size"]
    stem = os.path.join(work, "value_model")
    save_value_model(ValueModel(d, d, 3), stem, llm=folder)
    generator = torch.Generator().manual_seed(0)
    lo, hi = (16, 24) if args.tiny else (180, 220)
    prompts = [torch.randint(1000 if not args.tiny else 2, config["vocab_size"] - 1000 * (not args.tiny),
                             (lo + (hi - lo) * i // max(args.batch - 1, 1),), generator=generator).tolist()
               for i in range(args.batch)]
    kinds = {"plain": None, "re_control": {"value_model": "random", "step_size": STEP_SIZE,
                                           "num_updates": NUM_UPDATES}}
    modes = {"graphs": [] if not args.tiny else ["--enforce-eager"], "eager": ["--enforce-eager"]}
    tokens, times = {}, {}
    for mode, flags in modes.items():
        process, client = serve(folder, stem, flags, args, os.path.join(work, f"server_{mode}.log"))
        try:
            for kind, xargs in kinds.items():  # warm-up
                tokens[mode, kind] = batch(client, folder, prompts, args.new_tokens, xargs)[0]
            for _ in range(args.repeats):
                for kind, xargs in kinds.items():
                    times.setdefault((mode, kind), []).append(batch(client, folder, prompts, args.new_tokens,
                                                                    xargs)[1])
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=300)
        print(f"{mode}: " + ", ".join(f"{k} {median(times[mode, k]):.2f} s" for k in kinds), flush=True)
    med = {key: median(value) for key, value in times.items()}
    generated = args.batch * args.new_tokens
    records = [
        record("serve_recontrol_over_plain_time_graphs", med["graphs", "re_control"] / med["graphs", "plain"], 1.05,
               "x", "lower"),
        record("serve_recontrol_over_plain_time_eager", med["eager", "re_control"] / med["eager", "plain"], None,
               "x", "lower"),
        record("serve_same_tokens_graphs_vs_eager_plain", sum(a == b for a, b in zip(
            tokens["graphs", "plain"], tokens["eager", "plain"])), args.batch, "answers", "higher"),
        record("serve_same_tokens_graphs_vs_eager_recontrol", sum(a == b for a, b in zip(
            tokens["graphs", "re_control"], tokens["eager", "re_control"])), args.batch, "answers", "higher"),
        record("serve_recontrol_differs_from_plain", sum(a != b for a, b in zip(
            tokens["graphs", "re_control"], tokens["graphs", "plain"])), None, "answers", "higher"),
    ] + [record(f"serve_{mode}_{kind}_tokens_per_s", generated / med[mode, kind], None, "tokens/s", "higher")
         for mode in modes for kind in kinds]
    header = [
        "# GPU serving check: serve.py with CUDA graphs and eager",
        "",
        f"Command: `{command_line()}` (from the repository root)",
        "",
        f"- model: random {'tiny' if args.tiny else 'Llama-3-8B-shaped'} Llama in bfloat16 (load_format dummy, "
        f"token-id prompts of {lo}-{hi} tokens), value model ValueModel({d}, {d}, 3) random; RE-Control alpha "
        f"{STEP_SIZE:g}, n {NUM_UPDATES}",
        f"- load: {args.batch} concurrent requests per batch, greedy, {args.new_tokens} tokens forced; median of "
        f"{args.repeats} rounds (plain and RE-Control interleaved) after a warm-up",
        "- graphs: vLLM's default start (torch.compile + CUDA graphs)" + (" -- in --tiny both servers are eager"
                                                                          if args.tiny else ""),
        "- same_tokens: the graphs server's answers equal the eager server's (bfloat16: torch.compile's kernels may "
        "differ from eager's in the last bit, plain included; compare the RE-Control count with the plain one)",
    ] + environment_lines("cuda" if not args.tiny else "cpu")
    table = write_results(records, os.path.join(ROOT, "bench", "gpu_serve_tiny" if args.tiny else "gpu_serve"),
                          header)
    print("\n" + table)


if __name__ == "__main__":
    main()
