"""CPU benchmark of the RE-Control hooks on the embedded SmolLM2-135M: time, tokens and memory, side by side.

From the repository root:
    python bench/run_all.py              # full settings, ~15 min on 2 CPU cores -> bench/results.json, bench/results.md
    python bench/run_all.py --quick      # batch 4, 16 new tokens, a few minutes -> bench/results_quick.{json,md}
    python bench/run_all.py --profile    # torch.profiler on one RE-Control and one original generate: top ops
    python bench/run_all.py --repeats 7  # more counted rounds (default 5)

Variants, run in this order in every round (one uncounted warm-up round first), each generating exactly the same
number of tokens (min_new_tokens = max_new_tokens, so eos is masked until the last step):
    plain      model.generate
    capture    + utils.intervention.ActivationCapture(dtype=float16)  (stage 1; its states popped after each call)
    recontrol  + utils.intervention.ValueIntervention(step 0.5, 30 updates)  (stage 4)
    original   + bench.original_edit.OriginalEdit: the original repository's all-positions autograd SGD edit
Timing keeps freed memory in the process (bench/common.py malloc_for_timing; --default_malloc keeps glibc's adaptive
thresholds, which add seconds of page faults to one variant or another). Then a memory pass in a fresh process
(each variant once, peak RSS above the RSS just before it), and the capture-memory figure on random 4- and 16-layer
Llamas (our capture against generate(output_hidden_states=True)).
"""
import argparse
import copy
import json
import os
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

torch.set_num_threads(1)
torch.set_num_interop_threads(1)

# run as a file outside the repository root (python DIR/FILE.py): the root holds utils
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import (  # noqa: E402
    ROOT,
    command_line,
    environment_lines,
    forced_config,
    hh_prompts,
    interleaved,
    malloc_for_memory,
    malloc_for_timing,
    median,
    peak_extra_mb,
    record,
    write_results,
)
from bench.original_edit import OriginalEdit  # noqa: E402
from utils.generation import generate_batch  # noqa: E402
from utils.intervention import ActivationCapture, ValueIntervention  # noqa: E402
from utils.models import find_final_norm, hidden_size, load_model_and_tokenizer, resolve_model  # noqa: E402
from utils.value_model import ValueModel  # noqa: E402

STEP_SIZE, NUM_UPDATES = 0.5, 30
RATIOS = (("recontrol", "plain", "lower"), ("original", "recontrol", "higher"), ("capture", "plain", "lower"))
FULL = dict(batch_size=8, new_tokens=64)
QUICK = dict(batch_size=4, new_tokens=16)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batch 4, 16 new tokens (a few minutes)")
    parser.add_argument("--repeats", type=int, default=5, help="counted rounds; the median is reported")
    parser.add_argument("--profile", action="store_true", help="only profile one RE-Control and one original generate")
    parser.add_argument("--out", default=None, help="output stem (default bench/results, or bench/results_quick)")
    parser.add_argument("--default_malloc", action="store_true",
                        help="keep glibc's adaptive malloc thresholds while timing (noisier; see bench/common.py)")
    parser.add_argument("--memory_pass", action="store_true", help=argparse.SUPPRESS)  # the child process
    return parser.parse_args()


def make_variants(model, tokenizer, prompts, config, value_model, kept):
    """{name: fn() -> generated tokens}; capture's fn also records the bytes it kept in `kept`."""
    def run():
        return generate_batch(model, tokenizer, prompts, config)[1]

    def capture():
        with ActivationCapture(model, dtype=torch.float16) as cap:
            tokens = run()
            kept["capture"] = cap.pop().nbytes
        return tokens

    def recontrol():
        with ValueIntervention(model, value_model, STEP_SIZE, NUM_UPDATES):
            return run()

    def original():
        with OriginalEdit(model, value_model, STEP_SIZE, NUM_UPDATES):
            return run()

    return {"plain": run, "capture": capture, "recontrol": recontrol, "original": original}


def memory_pass(variants):
    """The child process: a warm-up generate (pages the weights in), then each variant once; peak RSS above the
    RSS just before it, in MB. glibc's thresholds were fixed at start, so freed blocks do not mask later peaks."""
    variants["plain"]()
    peak = {}
    for name, fn in variants.items():
        _, peak[name] = peak_extra_mb(fn)
        print(f"  {name}: {peak[name]:.1f} MB", flush=True)
    print("MEMORY " + json.dumps(peak))


def run_memory_pass(quick):
    """Peak memory in a fresh process, with its own malloc settings (malloc_for_memory)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--memory_pass"] + (["--quick"] if quick else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT).stdout.splitlines()
    print("\n".join(line for line in out if line.startswith("  ")))
    return json.loads(next(line for line in out if line.startswith("MEMORY "))[len("MEMORY "):])


def hook_seconds(model, value_model, batch_size, prompt_len, new_tokens, repeats):
    """Seconds one generate spends in each edit, measured on a copy of the final norm alone (no model around it):
    the prefill call on [B, L, d] and new_tokens - 1 decode calls on [B, 1, d], minus the same calls without a hook.
    Far less noisy than the difference of two whole generates."""
    holder = nn.Module()
    holder.model = nn.Module()
    holder.model.norm = copy.deepcopy(find_final_norm(model))  # found by find_final_norm(holder) at 'model.norm'
    gen = torch.Generator().manual_seed(0)
    d = hidden_size(model)
    prefill, step = torch.randn(batch_size, prompt_len, d, generator=gen), torch.randn(batch_size, 1, d, generator=gen)

    @torch.no_grad()
    def passes():
        holder.model.norm(prefill)
        for _ in range(new_tokens - 1):
            holder.model.norm(step)

    def hooked(make_hook):
        def fn():
            with make_hook():
                passes()
        return fn

    variants = {"none": passes,
                "recontrol": hooked(lambda: ValueIntervention(holder, value_model, STEP_SIZE, NUM_UPDATES)),
                "original": hooked(lambda: OriginalEdit(holder, value_model, STEP_SIZE, NUM_UPDATES))}
    times, _, _ = interleaved(variants, repeats, log=lambda _line: None)
    return {name: median(times[name]) - median(times["none"]) for name in ("recontrol", "original")}


def capture_bytes_by_layers(tokenizer, prompts, new_tokens, layer_counts=(4, 16)):
    """Bytes kept per batch by ActivationCapture (float16, last position) and by the original approach
    (generate(output_hidden_states=True): every layer, every position, in the model's dtype) on random Llamas."""
    from transformers import LlamaConfig, LlamaForCausalLM
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    enc = {k: enc[k] for k in ("input_ids", "attention_mask")}
    result = {}
    for layers in layer_counts:
        torch.manual_seed(0)
        config = LlamaConfig(hidden_size=256, num_attention_heads=4, num_key_value_heads=4, intermediate_size=512,
                             num_hidden_layers=layers, vocab_size=len(tokenizer), max_position_embeddings=1024,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                             bos_token_id=tokenizer.bos_token_id)
        model = LlamaForCausalLM(config).eval()
        gen_config = forced_config(model, tokenizer, new_tokens)
        with ActivationCapture(model, dtype=torch.float16) as cap:
            generate_batch(model, tokenizer, prompts, gen_config)
            ours = cap.pop().nbytes
        gen_config = copy.deepcopy(gen_config)
        gen_config.output_hidden_states = gen_config.return_dict_in_generate = True
        with torch.no_grad():
            out = model.generate(**enc, generation_config=gen_config)
        original = sum(h.nbytes for step in out.hidden_states for h in step)
        result[layers] = (ours, original, len(out.hidden_states[0]))
        print(f"  {layers} layers: ours {ours:,} bytes, original {original:,} bytes "
              f"({len(out.hidden_states)} steps x {len(out.hidden_states[0])} hidden states)")
    return result


def profile(variants, row_limit=15):
    """torch.profiler on one RE-Control and one original generate, top ops by self CPU time; each edit is labelled
    (record_function) so that its share of the generate shows."""
    from torch.profiler import ProfilerActivity, record_function
    from torch.profiler import profile as torch_profile

    def labelled(fn, label):
        def wrapper(*args):
            with record_function(label):
                return fn(*args)
        return wrapper

    patched = [(ValueIntervention, "edit", "recontrol_edit"), (OriginalEdit, "_hook", "original_edit")]
    saved = [getattr(cls, attr) for cls, attr, _ in patched]
    for (cls, attr, label), fn in zip(patched, saved):  # class level: the hooks are created inside the variants
        setattr(cls, attr, labelled(fn, label))
    try:
        for fn in variants.values():  # warm-up, as the uncounted round of the timing
            fn()
        with torch_profile(activities=[ProfilerActivity.CPU]):  # discarded: the first profiled generate grows the
            variants["plain"]()  # heap around the profiler's own buffers and shows seconds of page faults in aten::cat
        for name, label in (("recontrol", "recontrol_edit"), ("original", "original_edit")):
            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                variants[name]()
            events = prof.key_averages()
            total = sum(e.self_cpu_time_total for e in events)
            edit = sum(e.cpu_time_total for e in events if e.key == label)
            print(f"\n== {name}: one generate, {total / 1e6:.2f} s CPU in all; {label} (with its children): "
                  f"{edit / 1e6:.2f} s = {100 * edit / total:.1f}%")
            print(events.table(sort_by="self_cpu_time_total", row_limit=row_limit))
    finally:
        for (cls, attr, _), fn in zip(patched, saved):
            setattr(cls, attr, fn)


def main():
    args = parse_args()
    steady = not args.default_malloc
    if args.memory_pass:
        malloc_for_memory()
    elif steady:
        malloc_for_timing()
    settings = QUICK if args.quick else FULL
    batch_size, new_tokens = settings["batch_size"], settings["new_tokens"]
    stem = args.out or os.path.join(ROOT, "bench", "results_quick" if args.quick else "results")

    spec = resolve_model("smollm2_135M", None)
    model, tokenizer = load_model_and_tokenizer(spec, "cpu", "float32", False)
    prompts, lengths = hh_prompts(tokenizer, batch_size)
    padded = len(tokenizer(prompts, padding=True)["input_ids"][0])
    if not args.memory_pass:
        print(f"prompt token lengths: {lengths} (left-padded to {padded})")
    config = forced_config(model, tokenizer, new_tokens)
    d = hidden_size(model)
    torch.manual_seed(0)
    value_model = ValueModel(d, d, 2).eval()
    kept = {}
    variants = make_variants(model, tokenizer, prompts, config, value_model, kept)

    if args.memory_pass:
        return memory_pass(variants)
    if args.profile:
        return profile(variants)

    print(f"timing: {args.repeats} counted rounds + 1 warm-up, variants interleaved: {', '.join(variants)}")
    load_before = os.getloadavg()[0]
    times, outputs, cpu_times = interleaved(variants, args.repeats)
    load_after = os.getloadavg()[0]
    med = {name: median(t) for name, t in times.items()}
    cpu = {name: median(t) for name, t in cpu_times.items()}
    for name, tokens in outputs.items():
        assert tokens[0].shape == (batch_size, new_tokens), (name, tokens[0].shape)
    equal = all(torch.equal(a, b) for a, b in zip(outputs["recontrol"], outputs["original"]))
    changed = (outputs["recontrol"][-1] != outputs["plain"][-1]).float().mean().item()
    print(f"RE-Control tokens identical to the original's in every round: {equal}; "
          f"tokens that differ from plain: {100 * changed:.1f}%")

    hook = hook_seconds(model, value_model, batch_size, padded, new_tokens, args.repeats)
    print(f"edit alone, per generate ({new_tokens} forward passes): RE-Control {hook['recontrol']:.3f} s, "
          f"original {hook['original']:.3f} s (median of {args.repeats})")

    print("memory pass (fresh process): each variant once, peak RSS above the RSS just before it")
    peak = run_memory_pass(args.quick)

    print("capture memory against the number of layers (random Llama, hidden 256)")
    by_layers = capture_bytes_by_layers(tokenizer, prompts, new_tokens)
    (ours4, orig4, _), (ours16, orig16, _) = by_layers[4], by_layers[16]

    records = [
        record("recontrol_over_plain_time", med["recontrol"] / med["plain"], 1.15, "x", "lower"),
        record("original_over_recontrol_time", med["original"] / med["recontrol"], 1.5, "x", "higher"),
        record("capture_over_plain_time", med["capture"] / med["plain"], 1.05, "x", "lower"),
        record("recontrol_tokens_equal_original", int(equal), 1, "bool", "higher"),
        record("recontrol_tokens_differ_from_plain", changed, None, "fraction", "higher"),
    ]
    records += [record(f"{a}_over_{b}_time_paired", median([x / y for x, y in zip(times[a], times[b])]), None, "x",
                       better) for a, b, better in RATIOS]
    records += [record(f"{a}_over_{b}_cpu_time", cpu[a] / cpu[b], None, "x", better) for a, b, better in RATIOS]
    records += [
        record("recontrol_edit_time", hook["recontrol"], None, "s", "lower"),
        record("original_edit_time", hook["original"], None, "s", "lower"),
        record("original_over_recontrol_edit_time", hook["original"] / hook["recontrol"], None, "x", "higher"),
        record("recontrol_over_plain_time_from_edit", (med["plain"] + hook["recontrol"]) / med["plain"], None, "x",
               "lower"),
    ]
    records += [record(f"{name}_median_time", med[name], None, "s", "lower") for name in variants]
    records += [record(f"{name}_peak_rss", peak[name], None, "MB", "lower") for name in variants]
    records += [
        record("capture_kept_bytes", kept["capture"], None, "bytes", "lower"),
        record("capture_bytes_ours_4_layers", ours4, None, "bytes", "lower"),
        record("capture_bytes_ours_16_layers", ours16, None, "bytes", "lower"),
        record("capture_bytes_ours_16_over_4", ours16 / ours4, 1.0, "x", "lower"),
        record("capture_bytes_original_4_layers", orig4, None, "bytes", "lower"),
        record("capture_bytes_original_16_layers", orig16, None, "bytes", "lower"),
        record("capture_bytes_original_16_over_4", orig16 / orig4, None, "x", "lower"),
    ]

    header = [
        "# RE-Control CPU benchmark",
        "",
        f"Command: `{command_line()}` (from the repository root)",
        "",
        f"- settings{' (--quick)' if args.quick else ''}: {spec.name} ({spec.path}) on CPU, float32; batch "
        f"{batch_size} HH-RLHF-style prompts of {min(lengths)}-{max(lengths)} tokens ({lengths}), left-padded to "
        f"{padded}; {new_tokens} new tokens forced (min_new_tokens = max_new_tokens, eos masked until the last step); "
        f"greedy; use_cache=True",
        f"- RE-Control: step size {STEP_SIZE}, {NUM_UPDATES} updates, ValueModel({d}, {d}, 2) randomly initialised "
        f"(seed 0); original = bench/original_edit.py (autograd SGD on every position at every forward pass)",
        f"- timing: median of {args.repeats} rounds, variants interleaved in each round ({', '.join(variants)}), "
        f"one uncounted warm-up round",
        "- malloc while timing: " + ("freed memory kept in the process (mmap threshold 32 MB, trim threshold 1 GB; "
                                     "bench/common.py malloc_for_timing), the same for every variant" if steady else
                                     "glibc default (adaptive thresholds; --default_malloc)"),
        "- *_time_paired: median over rounds of the ratio within a round (the variants ran back to back); "
        "*_cpu_time: ratio of the median process CPU times (less sensitive to other processes on the machine); "
        f"1-minute load average {load_before:.2f} before the timing, {load_after:.2f} after",
        "- *_edit_time: seconds one generate spends in the edit, timed on a copy of the final norm alone with the "
        f"same shapes (one [{batch_size}, {padded}, {d}] prefill call, {new_tokens - 1} [{batch_size}, 1, {d}] decode "
        "calls) minus the same calls without a hook, median of the same number of rounds; "
        "recontrol_over_plain_time_from_edit = (plain median + recontrol_edit_time) / plain median",
        "- peak RSS: a separate process after the timing (one warm-up generate, then each variant once): VmHWM (reset "
        "via /proc/self/clear_refs) minus VmRSS just before, glibc's mmap/trim thresholds fixed at start so freed "
        "memory goes back to the OS and each peak is the variant's own",
        "- capture bytes by layers: random LlamaForCausalLM (hidden 256, 4 heads, intermediate 512, vocab "
        f"{len(tokenizer)}), same prompts and tokens; ours = ActivationCapture(float16), original = "
        "generate(output_hidden_states=True), all returned hidden states summed",
    ] + environment_lines()
    details = ["## Per-round times: wall s (process CPU s)", "", "| round | " + " | ".join(variants) + " |",
               "|---" * (len(variants) + 1) + "|"]
    for r in range(args.repeats):
        details.append(f"| {r + 1} | " + " | ".join(f"{times[n][r]:.2f} ({cpu_times[n][r]:.2f})" for n in variants)
                       + " |")
    table = write_results(records, stem, header, details)
    print("\n" + table)
    print(f"\nwrote {os.path.relpath(stem, ROOT)}.json and .md")


if __name__ == "__main__":
    main()
