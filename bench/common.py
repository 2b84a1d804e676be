"""Shared helpers of the benchmark scripts: prompts, forced-length generation, interleaved timing, peak memory, and
the results files (JSON records + a Markdown table).

Not a script; imported by bench/run_all.py and bench/gpu_check.py.
"""
import ctypes
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time
from types import SimpleNamespace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

from utils.generation import generation_config  # noqa: E402

MB = 1024 ** 2

# ----------------------------------------------------------------------------------------------------------------------
# The options of the benches that time a decode of an embedded data set


def decode_bench_parser(doc, out, repeats, threads_help="torch threads"):
    """An argparse parser with what those benches share: the data set and split decoded, the timed rounds, the
    threads and the output stem; a bench adds its own options."""
    import argparse
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_name", type=str, default="demo_polar", help="embedded data set")
    parser.add_argument("--split", type=str, default="tune", help="its split")
    parser.add_argument("--repeats", type=int, default=repeats, help="timed rounds (after one warm-up)")
    parser.add_argument("--threads", type=int, default=1, help=threads_help)
    parser.add_argument("--out", type=str, default=out, help="output stem")
    return parser


def open_split(args, limit=None):
    """SmolLM2-135M (float32, CPU), its tokenizer, the prompts of args.dataset_name/args.split (the first `limit`),
    and whether they need the tokenizer's special tokens (as utils.engines.open_engine: a chat template writes its
    own). Returns (model, tokenizer, prompts, add_special_tokens)."""
    from utils.data import load_prompts
    from utils.models import load_model_and_tokenizer, resolve_model
    spec = resolve_model("smollm2_135M")
    model, tokenizer = load_model_and_tokenizer(spec, "cpu", "float32")
    data_args = SimpleNamespace(dataset_name=args.dataset_name, data_file=None, dataset_path=None,
                                max_prompt_tokens=512, limit=limit)
    prompts = [p["prompt"] for p in load_prompts(data_args, args.split, spec, tokenizer)]
    return model, tokenizer, prompts, not spec.chat_template


# ----------------------------------------------------------------------------------------------------------------------
# Prompts: HH-RLHF-like multi-turn dialogues, built deterministically

EXCHANGES = [  # (question, answer sentences)
    ("I just moved to a new city and I do not know anyone here.",
     ["That sounds like a big change, and it is normal to feel a little lonely at first.",
      "One option is to look for local clubs or classes built around something you already enjoy.",
      "Volunteering is another good way to meet people while doing something useful."]),
    ("My neighbour plays loud music every night and I cannot sleep.",
     ["It can help to talk to your neighbour calmly and explain how the noise affects you.",
      "If that does not work, your building manager or landlord may be able to help.",
      "In the meantime, earplugs or a white noise machine can make the nights easier."]),
    ("What is the best way to start running if I have never exercised before?",
     ["Start slowly, for example with a mix of walking and short jogs three times a week.",
      "Increase the running part a little each week and take rest days seriously.",
      "Comfortable shoes matter more than expensive equipment."]),
    ("Can you explain how compound interest works?",
     ["Compound interest means you earn interest on the interest you already earned, not only on the original amount.",
      "Over many years this makes savings grow much faster than simple interest would.",
      "The same effect works against you on debts such as credit cards."]),
    ("I keep forgetting to water my plants, any tips?",
     ["A simple reminder on your phone or a watering schedule on the fridge can make a big difference.",
      "You could also choose plants that tolerate dry soil, such as succulents.",
      "Self-watering pots are another easy option."]),
    ("My sister and I had an argument about money and now she will not talk to me.",
     ["Arguments about money are very common between siblings, and they usually can be repaired.",
      "You might send her a short message saying that you value the relationship more than the disagreement.",
      "Give her some time, and listen to her side when she is ready to talk."]),
    ("What should I cook for a dinner party of six people?",
     ["A pasta dish with a fresh salad is easy to prepare and most guests enjoy it.",
      "Ask your guests about allergies or diets before you plan the menu.",
      "A simple dessert such as fruit with cream finishes the meal nicely."]),
    ("Is it safe to leave my laptop charging overnight?",
     ["Modern laptops stop charging when the battery is full, so it is generally safe.",
      "Keep it on a hard surface so that air can flow around it.",
      "Some laptops also offer a setting that limits the charge to protect the battery."]),
    ("How do I tell my manager that I am overwhelmed at work?",
     ["Try to describe the specific tasks that take most of your time and suggest what could change.",
      "Asking for a short meeting shows that you take the problem seriously.",
      "Most managers would rather know early than find out when deadlines are missed."]),
    ("Why do cats knock things off tables?",
     ["Cats often do it out of curiosity, to play, or simply to get your attention.",
      "It is also a hunting instinct: they test whether an object moves.",
      "Giving them more toys and play time usually makes it happen less often."]),
]


def hh_prompts(tokenizer, count, lo=150, hi=300):
    """`count` dialogues "\\n\\nHuman: ... \\n\\nAssistant: ..." ending with "\\n\\nAssistant:", their token
    lengths spread over [lo, hi]. Returns (prompts, token lengths)."""
    prompts, lengths = [], []
    for i in range(count):
        target = lo + 10 + (hi - lo - 15) * i / max(count - 1, 1)
        turns, k = "", 0
        while True:  # add exchanges (with 3, 2 or 1 answer sentences) while the prompt stays within the target
            question, answers = EXCHANGES[(3 * i + k) % len(EXCHANGES)]
            for m in (3, 2, 1):
                longer = turns + f"\n\nHuman: {question}\n\nAssistant: {' '.join(answers[:m])}"
                nxt = EXCHANGES[(3 * i + k + 1) % len(EXCHANGES)][0]
                if len(tokenizer(longer + f"\n\nHuman: {nxt}\n\nAssistant:")["input_ids"]) <= target:
                    break
            else:
                break
            turns, k = longer, k + 1
        prompt = turns + f"\n\nHuman: {EXCHANGES[(3 * i + k) % len(EXCHANGES)][0]}\n\nAssistant:"
        n = len(tokenizer(prompt)["input_ids"])
        if not lo <= n <= hi:
            raise RuntimeError(f"prompt {i} has {n} tokens, outside [{lo}, {hi}]")
        prompts.append(prompt)
        lengths.append(n)
    return prompts, lengths


# ----------------------------------------------------------------------------------------------------------------------
# Generation of exactly `new_tokens` tokens

def forced_config(model, tokenizer, new_tokens):
    """utils.generation.generation_config (greedy, use_cache) with min_new_tokens = max_new_tokens: eos is masked
    until the last step, so every variant generates exactly `new_tokens` tokens per row (equal work)."""
    config = generation_config(model, tokenizer, new_tokens, do_sample=False, use_cache=True)
    config.min_new_tokens = new_tokens
    return config


def ids_tokenizer(pad_token_id, eos_token_id):
    """The two fields generation_config reads from a tokenizer, for runs on random token ids."""
    return SimpleNamespace(pad_token_id=pad_token_id, eos_token_id=eos_token_id)


# ----------------------------------------------------------------------------------------------------------------------
# Timing

def sync_for(device):
    return torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)


def cpu_seconds_so_far():
    """User + system CPU seconds of this process and of its children that have been waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def interleaved(variants, repeats, warmup=1, sync=lambda: None, log=print):
    """Run every variant once per round, in order, for `warmup` + `repeats` rounds; the warm-up rounds are not timed.

    variants: {name: fn() -> output}. Returns ({name: [wall seconds per counted round]}, {name: [output per round]},
    {name: [CPU seconds per counted round]}), this process's and its waited-for children's (a variant that runs a
    command counts the command's); CPU time is less disturbed by other processes on the machine.
    """
    times = {name: [] for name in variants}
    cpu_times = {name: [] for name in variants}
    outputs = {name: [] for name in variants}
    for r in range(warmup + repeats):
        line = []
        for name, fn in variants.items():
            sync()
            start, cpu_start = time.perf_counter(), cpu_seconds_so_far()
            out = fn()
            sync()
            seconds, cpu_seconds = time.perf_counter() - start, cpu_seconds_so_far() - cpu_start
            outputs[name].append(out)
            if r >= warmup:
                times[name].append(seconds)
                cpu_times[name].append(cpu_seconds)
            line.append(f"{name} {seconds:.2f}s (cpu {cpu_seconds:.2f}s)")
        log(f"  round {r + 1}/{warmup + repeats}{' (warm-up)' if r < warmup else ''}: " + ", ".join(line)
            + f"; load {os.getloadavg()[0]:.2f}")
    return times, outputs, cpu_times


def median(values):
    return statistics.median(values)


# ----------------------------------------------------------------------------------------------------------------------
# Peak memory: RSS high-water mark on Linux CPU, the allocator's peak on CUDA

def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss_mb():
    return _status_kb("VmRSS") / 1024


def _mallopt(mmap_threshold, trim_threshold):
    """Fixed glibc M_MMAP_THRESHOLD / M_TRIM_THRESHOLD (this also turns off glibc's adaptive thresholds)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(-3, mmap_threshold) and libc.mallopt(-1, trim_threshold))


def malloc_for_timing():
    """Keep freed memory in the process (blocks up to 32 MB from the heap, never trimmed below 1 GB). With glibc's
    adaptive thresholds the growing KV cache (torch.cat every step) sometimes maps and faults in fresh pages and
    sometimes not, depending on what ran before: seconds of system time that land on one variant or another."""
    return _mallopt(32 * MB, 1024 * MB)


def malloc_for_memory():
    """Give freed blocks back at once (blocks over 128 KB mapped on allocation, unmapped on free), so that VmRSS
    follows the live tensors and a variant's peak is its own, whatever ran before. Call at the start of a process
    that only measures memory: it makes large allocations dearer."""
    return _mallopt(128 * 1024, 256 * 1024)


def peak_extra_mb(fn, device="cpu"):
    """Run fn(); returns (output, peak memory during fn minus memory just before it, in MB).

    CPU: VmHWM after resetting it with /proc/self/clear_refs ('5'), minus VmRSS before. CUDA: max_memory_allocated
    after reset_peak_memory_stats, minus memory_allocated before."""
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        out = fn()
        torch.cuda.synchronize()
        return out, (torch.cuda.max_memory_allocated() - before) / MB
    before = rss_mb()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    out = fn()
    return out, _status_kb("VmHWM") / 1024 - before


# ----------------------------------------------------------------------------------------------------------------------
# Results: JSON records and a Markdown table

def record(name, value, target=None, unit="", better="lower"):
    """One figure. `better` says which direction is good; with target None it is only a reading aid."""
    return {"name": name, "value": value, "target": target, "unit": unit, "better": better}


def met(rec):
    if rec["target"] is None:
        return "—"
    ok = rec["value"] <= rec["target"] if rec["better"] == "lower" else rec["value"] >= rec["target"]
    return "yes" if ok else "NO"


def _fmt(value):
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.0f}"
    return str(value)


def markdown_table(records):
    lines = ["| name | value | target | unit | better | met? |", "|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['name']} | {_fmt(r['value'])} | {_fmt(r['target'])} | {r['unit']} | {r['better']} | "
                     f"{met(r)} |")
    return "\n".join(lines)


def environment_lines(device="cpu"):
    import transformers
    lines = [f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
             f"- python {platform.python_version()}, torch {torch.__version__}, "
             f"transformers {transformers.__version__}",
             f"- torch threads: {torch.get_num_threads()} intra-op, {torch.get_num_interop_threads()} inter-op; "
             f"machine: {platform.machine()}, {os.cpu_count()} CPUs ({cpu_model()}, torch's kernels: "
             f"{torch.backends.cpu.get_cpu_capability()})"]  # hosts differ: timings only compare on one
    if torch.device(device).type == "cuda":
        lines.append(f"- GPU: {torch.cuda.get_device_name()}, CUDA {torch.version.cuda}")
    return lines


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def command_line():
    return " ".join(["python"] + [os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])


def write_results(records, stem, header_lines, detail_lines=()):
    """stem.json (the records) and stem.md (header, table, details); returns the table."""
    with open(stem + ".json", "w") as f:
        json.dump(records, f, indent=1)
        f.write("\n")
    table = markdown_table(records)
    with open(stem + ".md", "w") as f:
        f.write("\n".join(header_lines) + "\n\n" + table + "\n")
        if detail_lines:
            f.write("\n" + "\n".join(detail_lines) + "\n")
    return table
