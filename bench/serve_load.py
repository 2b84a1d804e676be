"""RE-Control served under load: serve.py on the embedded demo model with the demo's value model, concurrent clients
sending plain requests and RE-Control at two settings.

From the repository root, after `bash scripts/demo.sh` (its value model, in runs/demo) and with the vLLM extra:
    .venv/bin/python bench/serve_load.py
    .venv/bin/python bench/serve_load.py --clients 32 --seconds 40 --repeats 2 --prompts 64

1. Offline answers: stage 4 (inference_intervention.py, --engine hf: the reference) on the first --prompts demo test
   prompts, plain and at both settings: the sweep's choice for this value model (results/smollm2_135M_demo_sweep.json,
   alpha 3, n 10) and a heavier one from the same grid (alpha 2, n 20).
2. serve.py with that value model as "demo" (--settings_from the sweep), vLLM's worker on one core (its default
   binding on CPU), --max-num-seqs = --clients, eager mode.
3. Phases, in this order in every round after one short uncounted warm-up: plain (every request plain), re_control
   (requests alternate between the two settings) and mixed (plain, setting 1 and setting 2 in turn). In a phase,
   --clients closed-loop clients (threads, the openai client, /v1/chat/completions) each send a request, wait for its
   answer and send the next, for --seconds; each client walks the prompts from its own offset.
4. Every answer is compared token for token with the offline answer of its prompt and kind (the generated tokens,
   decoded as stage 4 decodes them).
Throughput: completion tokens / the phase's wall time (until its last answer). Latency: per request, p50 and p95 over
the rounds. RE-Control's cost: the plain phase's throughput over the re_control phase's, median over rounds (the same
clients, prompts and server). Writes bench/serve_load.{json,md}.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import ROOT, command_line, environment_lines, median, record, write_results  # noqa: E402

DEMO_VALUE_MODEL = "runs/demo/trained_model/value_model_smollm2_135M_demo_0.001_td1_vf0.1_es"
SWEEP = "results/smollm2_135M_demo_sweep.json"
SECOND_SETTING = {"step_size": 2.0, "num_updates": 20}  # from the sweep's grid: twice the updates of its choice
PHASES = {"plain": ("plain",), "re_control": ("setting_1", "setting_2"), "mixed": ("plain", "setting_1", "setting_2")}
ENV = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=ROOT)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--value_model", default=DEMO_VALUE_MODEL, help="the value model served (path, no extension)")
    parser.add_argument("--settings_from", default=SWEEP, help="the sweep chosen for it: setting 1 and the default")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=40, help="how long each phase sends requests")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of the three phases")
    parser.add_argument("--prompts", type=int, default=64, help="demo test prompts the clients walk")
    parser.add_argument("--max_new_tokens", type=int, default=40, help="max_tokens of every request (the demo's)")
    parser.add_argument("--work_dir", default="runs/serve_load", help="stage 4's offline answers go here")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "serve_load"), help="results stem")
    return parser.parse_args()


def offline_answers(args, settings):
    """({kind: [stage 4's answer ('results') per prompt]}, the prompts' conversations) from inference_intervention.py
    --engine hf."""
    answers, conversations = {}, None
    for kind, setting in settings.items():
        flags = ["--model_name", "smollm2_135M", "--dataset_name", "demo", "--output_dir", args.work_dir, "--limit",
                 str(args.prompts), "--max_new_tokens", str(args.max_new_tokens), "--batch_size", "50"]
        if setting:
            flags += ["--use_intervention", "True", "--value_model", args.value_model, "--lr",
                      str(setting["step_size"]), "--epochs", str(setting["num_updates"])]
        command = [sys.executable, "inference_intervention.py", *flags]
        name = subprocess.run([*command, "--print_run_name", "True"], cwd=ROOT, env=ENV, check=True,
                              capture_output=True, text=True).stdout.strip().splitlines()[-1]
        subprocess.run(command, cwd=ROOT, env=ENV, check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(ROOT, args.work_dir, "response", f"{name}.json")) as f:
            records = json.load(f)
        answers[kind] = [r["results"] for r in records]
        conversations = conversations or [r["conversation"] for r in records]
        print(f"offline {kind}: {name}", flush=True)
    return answers, conversations


def start_server(args, log_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "serve.py", "--value_model", f"demo={args.value_model}", "--settings_from",
               f"demo={args.settings_from}", "--host", "127.0.0.1", "--port", str(port), "--enforce-eager",
               "--max-num-seqs", str(args.clients), "--disable-uvicorn-access-log"]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=dict(ENV, VLLM_CPU_KVCACHE_SPACE="2"), stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    return process, port, " ".join(["python", *command[1:]])


def wait_until_up(process, client, log_path, timeout=600):
    import openai
    deadline = time.time() + timeout
    while True:
        if process.poll() is not None:
            sys.exit(f"serve.py exited with {process.returncode}; see {log_path}")
        try:
            client.models.list()
            return
        except openai.APIConnectionError:
            if time.time() > deadline:
                sys.exit(f"serve.py did not answer within {timeout} s; see {log_path}")
            time.sleep(1)


def run_phase(client, tokenizer, args, questions, kinds, xargs, offline, seconds):
    """Closed-loop clients for `seconds`: [(kind, latency s, completion tokens, same as offline, error)]."""
    results, lock = [], threading.Lock()
    stop = time.time() + seconds

    def client_loop(c):
        i = c
        while time.time() < stop:
            kind, prompt = kinds[i % len(kinds)], (c * 7 + i) % len(questions)
            start = time.time()
            try:
                reply = client.chat.completions.create(
                    model="smollm2_135M", messages=[{"role": "user", "content": questions[prompt]}],
                    max_tokens=args.max_new_tokens, temperature=0,
                    extra_body={"return_token_ids": True, **({"vllm_xargs": xargs[kind]} if xargs[kind] else {})})
                choice = reply.choices[0]
                same = tokenizer.decode(choice.token_ids, skip_special_tokens=True).strip() == offline[kind][prompt]
                row = (kind, time.time() - start, reply.usage.completion_tokens, same, None)
            except Exception as err:  # counted, never hidden
                row = (kind, time.time() - start, 0, False, f"{type(err).__name__}: {err}")
            with lock:
                results.append(row)
            i += 1

    began = time.time()
    with ThreadPoolExecutor(max_workers=args.clients) as pool:
        list(pool.map(client_loop, range(args.clients)))
    return results, time.time() - began


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def main():
    args = parse_args()
    import openai

    from utils.data import conversation_text, load_records, record_turns
    from utils.models import embedded_model_folder, load_tokenizer
    from utils.sweep import read_choice
    if not os.path.exists(os.path.join(ROOT, args.value_model + ".safetensors")):
        sys.exit(f"{args.value_model}.safetensors not found: run bash scripts/demo.sh first")
    chosen, _ = read_choice(os.path.join(ROOT, args.settings_from), "re_control", "smollm2_135M")
    settings = {"plain": None, "setting_1": chosen, "setting_2": SECOND_SETTING}
    xargs = {kind: (dict(setting, value_model="demo") if setting else None) for kind, setting in settings.items()}
    turns = [record_turns(r) for r in load_records("demo", "test")[:args.prompts]]
    questions = [t[-1][1] for t in turns]
    offline, conversations = offline_answers(args, settings)
    if conversations != [conversation_text(t) for t in turns]:
        sys.exit("stage 4's prompts are not the first --prompts demo test prompts in order")
    tokenizer = load_tokenizer(embedded_model_folder())

    log_path = os.path.join(ROOT, args.work_dir, "server.log")
    process, port, server_command = start_server(args, log_path)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=600)
    started = time.time()
    wait_until_up(process, client, log_path)
    startup = time.time() - started
    print(f"server up in {startup:.0f} s", flush=True)
    rows = {phase: [] for phase in PHASES}
    walls = {phase: [] for phase in PHASES}
    try:
        run_phase(client, tokenizer, args, questions, PHASES["mixed"], xargs, offline, min(10, args.seconds))
        for round_ in range(args.repeats):
            for phase, kinds in PHASES.items():
                results, wall = run_phase(client, tokenizer, args, questions, kinds, xargs, offline, args.seconds)
                rows[phase].append(results)
                walls[phase].append(wall)
                tokens = sum(r[2] for r in results)
                print(f"round {round_ + 1} {phase}: {len(results)} requests, {tokens / wall:.1f} tokens/s, "
                      f"{sum(r[4] is not None for r in results)} errors, "
                      f"{sum(not r[3] for r in results)} differ from offline", flush=True)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            stopped = process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stopped = -9
    throughput = {phase: median([sum(r[2] for r in results) / wall for results, wall in zip(rows[phase],
                                                                                           walls[phase])])
                  for phase in PHASES}
    every = [r for phase in PHASES for results in rows[phase] for r in results]
    errors = [r[4] for r in every if r[4] is not None]
    answered = [r for r in every if r[4] is None]
    records = [
        record("errors", len(errors), 0, "requests", "lower"),
        record("answers_identical_to_offline", sum(r[3] for r in answered), len(answered), "answers", "higher"),
        record("plain_over_re_control_throughput", throughput["plain"] / throughput["re_control"], 1.15, "x",
               "lower"),
        record("plain_over_re_control_throughput_paired",
               median([sum(r[2] for r in p) / pw / (sum(r[2] for r in q) / qw) for p, pw, q, qw in
                       zip(rows["plain"], walls["plain"], rows["re_control"], walls["re_control"])]), None, "x",
               "lower"),
    ]
    records += [record(f"{phase}_tokens_per_s", throughput[phase], None, "tokens/s", "higher") for phase in PHASES]
    for phase in PHASES:
        latencies = [r[1] for results in rows[phase] for r in results if r[4] is None]
        records += [record(f"{phase}_latency_p50", percentile(latencies, 0.5), None, "s", "lower"),
                    record(f"{phase}_latency_p95", percentile(latencies, 0.95), None, "s", "lower"),
                    record(f"{phase}_requests", len(latencies), None, "requests", "higher")]
    for kind in settings:  # inside the mixed phase: the kinds share batches
        latencies = [r[1] for results in rows["mixed"] for r in results if r[0] == kind and r[4] is None]
        records.append(record(f"mixed_{kind}_latency_p50", percentile(latencies, 0.5), None, "s", "lower"))
    records += [record("server_startup_time", startup, None, "s", "lower"),
                record("server_exit_status", stopped, 0, "", "lower")]
    header = [
        "# RE-Control served under load (serve.py, vLLM's OpenAI-compatible server)",
        "",
        f"Command: `{command_line()}` (from the repository root, after `bash scripts/demo.sh`)",
        "",
        f"- server: `{server_command}` (vllm-cpu, float32, eager; vLLM binds its worker to one core and keeps the "
        "other for its API server and these clients)",
        f"- value model: {args.value_model} as `demo`; setting 1 = the sweep's choice for it ({args.settings_from}: "
        f"alpha {chosen['step_size']:g}, n {chosen['num_updates']}), setting 2 = alpha "
        f"{SECOND_SETTING['step_size']:g}, n {SECOND_SETTING['num_updates']}",
        f"- load: {args.clients} closed-loop clients (threads, the openai client, /v1/chat/completions, greedy, "
        f"max_tokens {args.max_new_tokens}) over the first {args.prompts} demo test prompts; per round the phases "
        f"plain (all plain), re_control (settings 1 and 2 alternating) and mixed (plain, 1, 2 in turn), "
        f"{args.seconds:g} s each; {args.repeats} rounds after a 10 s uncounted warm-up",
        "- throughput: completion tokens / wall time of the phase, median over rounds; latency: per request, over "
        "rounds; the *_paired ratio is the median of the per-round ratios",
        "- answers_identical_to_offline: every answer's generated tokens, decoded as stage 4 decodes them, against "
        "stage 4's offline answer (inference_intervention.py --engine hf) for the same prompt and setting",
    ] + environment_lines()
    details = [f"- error: {e}" for e in errors[:20]]
    table = write_results(records, args.out, header, details)
    print("\n" + table)


if __name__ == "__main__":
    main()
