"""vLLM against HF generate on the demo's stage 4: throughput, and what RE-Control's edit costs inside vLLM.

From the repository root, with the vLLM extra (bash scripts/setup.sh --vllm):
    .venv/bin/python bench/vllm_throughput.py               # 100 demo test prompts x 40 tokens, batch 50
    .venv/bin/python bench/vllm_throughput.py --repeats 5
    .venv/bin/python bench/vllm_throughput.py --threads 2   # 2 torch threads, vLLM's worker on cores 0-1
                                                            # -> bench/vllm_throughput_2threads.{json,md}

The embedded SmolLM2-135M in float32 on CPU, the demo's test prompts (chat template), greedy, 40 new tokens forced
(min_new_tokens: eos masked until the last step, so every variant does the same work), the prompts in the
length-sorted batches of stage 4 (utils.generation.length_sorted_batches), one generate call per batch. Variants,
interleaved in every round after one uncounted warm-up round:
    hf_plain        utils.generation.generate_batch
    hf_recontrol    + utils.intervention.ValueIntervention
    vllm_plain      utils.vllm_engine.VllmEngine.generate (max_num_seqs = the batch size)
    vllm_recontrol  + the edit inside vLLM (the same edit_states)
RE-Control: the demo's step size and number of updates (utils.paper.default_settings) with a random
ValueModel(576, 576, 2) (seed 0). One torch thread in this process, and vLLM's worker bound to one core
(VLLM_CPU_OMP_THREADS_BIND "0"; --threads N: N threads and cores 0..N-1). Then one unforced pass per engine (eos ends
a response, as in stage 4): how many responses are token-identical between HF and vLLM, plain and with RE-Control.
Writes bench/vllm_throughput.{json,md}.
"""
import argparse
import os
import sys
import time
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB

import torch  # noqa: E402

# run as a file outside the repository root (python DIR/FILE.py): the root holds utils
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import (  # noqa: E402
    ROOT,
    command_line,
    environment_lines,
    forced_config,
    interleaved,
    median,
    record,
    write_results,
)
from utils.data import load_prompts  # noqa: E402
from utils.generation import generate_batch, generation_config, length_sorted_batches  # noqa: E402
from utils.intervention import ValueIntervention  # noqa: E402
from utils.models import embedded_model_folder, hidden_size, load_model_and_tokenizer, resolve_model  # noqa: E402
from utils.paper import default_settings  # noqa: E402
from utils.value_model import ValueModel  # noqa: E402
from utils.vllm_engine import VllmEngine, require_vllm  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_prompts", type=int, default=100, help="demo test prompts")
    parser.add_argument("--batch_size", type=int, default=50, help="prompts per generate call (the demo's stage 4)")
    parser.add_argument("--new_tokens", type=int, default=40, help="tokens per response (forced while timing)")
    parser.add_argument("--repeats", type=int, default=3, help="counted rounds; the median is reported")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads here, and cores 0..threads-1 for vLLM's worker")
    parser.add_argument("--enforce_eager", type=lambda v: v.lower() in ("1", "true", "yes"), default=True,
                        help="vLLM without torch.compile (True) or with it (False: inductor's C++ kernels on CPU)")
    parser.add_argument("--out", default=None,
                        help="output stem (default bench/vllm_throughput, with _{N}threads for --threads N > 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # vLLM's worker binds its OpenMP threads to these cores; set before the engine's processes start
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "0" if args.threads == 1 else f"0-{args.threads - 1}")
    args.out = args.out or os.path.join(ROOT, "bench", "vllm_throughput" + (
        f"_{args.threads}threads" if args.threads > 1 else ""))
    return args


def rows_of(tokens, mask):
    return [row[m].tolist() for row, m in zip(tokens, mask)]


def main():
    args = parse_args()
    require_vllm()
    spec = resolve_model("smollm2_135M", None)
    model, tokenizer = load_model_and_tokenizer(spec, "cpu", "float32", False)
    data_args = SimpleNamespace(dataset_name="demo", data_file=None, dataset_path=None, max_prompt_tokens=512,
                                limit=args.num_prompts)
    prompts = [p["prompt"] for p in load_prompts(data_args, "test", spec, tokenizer)]
    add_special = not spec.chat_template
    batches = [[prompts[i] for i in batch]
               for batch in length_sorted_batches(prompts, tokenizer, args.batch_size, add_special)]
    batch_ids = [[tokenizer(p, add_special_tokens=add_special)["input_ids"] for p in batch] for batch in batches]
    lengths = [len(ids) for batch in batch_ids for ids in batch]
    d = hidden_size(model)
    torch.manual_seed(0)
    value_model = ValueModel(d, d, 2).eval()
    step_size, num_updates = default_settings("smollm2_135M", "demo")

    start = time.perf_counter()
    engine = VllmEngine(embedded_model_folder(), dtype="float32", seed=0, max_model_len=1024,
                        enforce_eager=args.enforce_eager, max_num_seqs=args.batch_size)
    startup = time.perf_counter() - start
    print(f"vLLM engine started in {startup:.1f} s; {len(prompts)} prompts of {min(lengths)}-{max(lengths)} tokens, "
          f"batches of {args.batch_size}, {args.new_tokens} new tokens")

    forced = forced_config(model, tokenizer, args.new_tokens)

    def hf(config):
        return [rows_of(*generate_batch(model, tokenizer, batch, config, add_special)[1:]) for batch in batches]

    def vllm(edit, min_new_tokens):
        kwargs = dict(value_model=value_model, step_size=step_size, num_updates=num_updates) if edit else {}
        return [engine.generate(ids, args.new_tokens, min_new_tokens=min_new_tokens, **kwargs) for ids in batch_ids]

    def hf_recontrol(config):
        with ValueIntervention(model, value_model, step_size, num_updates):
            return hf(config)

    variants = {"hf_plain": lambda: hf(forced), "hf_recontrol": lambda: hf_recontrol(forced),
                "vllm_plain": lambda: vllm(False, args.new_tokens),
                "vllm_recontrol": lambda: vllm(True, args.new_tokens)}
    print(f"timing: {args.repeats} counted rounds + 1 warm-up, variants interleaved: {', '.join(variants)}")
    times, outputs, _ = interleaved(variants, args.repeats)
    for name, out in outputs.items():
        assert all(len(row) == args.new_tokens for batch in out[0] for row in batch), name
    med = {name: median(t) for name, t in times.items()}
    tokens = len(prompts) * args.new_tokens
    speed = {name: tokens / med[name] for name in variants}

    print("unforced pass: eos ends a response, as in stage 4")
    natural = generation_config(model, tokenizer, args.new_tokens)
    same = {}
    for label, hf_rows, vllm_rows in (("plain", hf(natural), vllm(False, 0)),
                                      ("recontrol", hf_recontrol(natural), vllm(True, 0))):
        pairs = [(a, b) for ha, vb in zip(hf_rows, vllm_rows) for a, b in zip(ha, vb)]
        same[label] = sum(a == b for a, b in pairs)
        print(f"  {label}: {same[label]}/{len(pairs)} responses token-identical")
    engine.close()

    records = [
        record("vllm_over_hf_throughput", speed["vllm_plain"] / speed["hf_plain"], 2.0, "x", "higher"),
        record("recontrol_over_plain_time_vllm", med["vllm_recontrol"] / med["vllm_plain"], 1.15, "x", "lower"),
        record("recontrol_over_plain_time_hf", med["hf_recontrol"] / med["hf_plain"], None, "x", "lower"),
        record("vllm_over_hf_throughput_recontrol", speed["vllm_recontrol"] / speed["hf_recontrol"], None, "x",
               "higher"),
        record("recontrol_over_plain_time_vllm_paired",
               median([r / p for r, p in zip(times["vllm_recontrol"], times["vllm_plain"])]), None, "x", "lower"),
        record("vllm_over_hf_throughput_paired",
               median([h / v for h, v in zip(times["hf_plain"], times["vllm_plain"])]), None, "x", "higher"),
    ]
    records += [record(f"{name}_tokens_per_s", speed[name], None, "tokens/s", "higher") for name in variants]
    records += [record(f"{name}_median_time", med[name], None, "s", "lower") for name in variants]
    records += [record(f"same_responses_{label}", same[label], len(prompts), "responses", "higher") for label in same]
    records.append(record("vllm_startup_time", startup, None, "s", "lower"))
    header = [
        "# vLLM against HF generate on the demo's stage 4",
        "",
        f"Command: `{command_line()}` (from the repository root)",
        "",
        f"- {spec.name} ({spec.path}) in float32 on CPU; {len(prompts)} demo test prompts (chat template) of "
        f"{min(lengths)}-{max(lengths)} tokens in length-sorted batches of {args.batch_size}, one generate call per "
        f"batch; greedy; {args.new_tokens} new tokens forced while timing (HF min_new_tokens, vLLM min_tokens)",
        f"- RE-Control: step size {step_size}, {num_updates} updates (the demo's), ValueModel({d}, {d}, 2) random "
        "(seed 0); in vLLM the same utils.intervention.edit_states on the rows that get logits",
        f"- timing: median of {args.repeats} rounds, variants interleaved ({', '.join(variants)}), one uncounted "
        f"warm-up round; vLLM: {'enforce_eager' if args.enforce_eager else 'torch.compile'}, "
        f"max_num_seqs {args.batch_size}, worker bound to core(s) "
        f"{os.environ['VLLM_CPU_OMP_THREADS_BIND']} (its scheduler runs in another process)",
        "- same_responses_*: one unforced pass (eos ends a response), responses token-identical between the engines; "
        "the RE-Control pass uses the random value model above, not a trained one",
    ] + environment_lines()
    table = write_results(records, args.out, header)
    print("\n" + table)


if __name__ == "__main__":
    main()
