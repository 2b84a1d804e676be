"""report_html.py: the page renders in headless Chromium (Debian's `chromium`) with the results table, a plot and
the responses beside base's, sorted by reward change."""
import json
import os
import re
import shutil
import subprocess

import pytest

import report_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
M = "toy_demo"
PROMPTS = ["Why is the sky blue?", "How do I bake bread?", "My cat is sad, what can I do?"]


def write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)


def run_folder(root):
    """Base and one RE-Control run over three prompts, scored as stages 5-6 write them, and one plot."""
    answers = {"base": ["Light scatters.", "Mix and bake.", "Give it time."],
               "steer": ["Light scatters <b>beautifully</b>!", "Mix and bake, lovely!", "Give it love and time."]}
    rewards = {"base": [0.1, 0.0, 0.2], "steer": [0.9, 0.1, 0.5]}
    for name, run in (("base", f"{M}_base"), ("steer", f"{M}_0.001_20_2.0")):
        write(os.path.join(root, "response", f"{run}.json"),
              [{"prompt": f"User: {p}\nAssistant:", "results": a, "conversation": f"Human: {p}\n\nAssistant:"}
               for p, a in zip(PROMPTS, answers[name])])
        write(os.path.join(root, "response", f"{run}.meta.json"),
              {"method": "base" if name == "base" else "RE-Control", "split": "test", "seconds": 1.5,
               **({"step_size": 2.0, "num_updates": 20} if name == "steer" else {})})
        write(os.path.join(root, "final_reward", f"{run}.json"),
              {"run": run, "rewards": rewards[name], "average_reward": sum(rewards[name]) / 3, "standard_error": 0.1})
        write(os.path.join(root, "evaluations", f"{run}.json"), {"diversity": 0.8, "coherence": 0.7})
    from utils.io import new_figure, save_figure
    fig, ax = new_figure(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    save_figure(fig, os.path.join(root, "results", f"{M}_rewards.png"))


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium); .ci/run installs it")
def test_report_renders_table_plot_and_sorted_response_pairs(tmp_path):
    root = str(tmp_path / "run")
    run_folder(root)
    report_html.main(["--model_name", "toy", "--dataset_name", "demo", "--output_dir", root])
    page = os.path.join(root, "results", f"{M}_report.html")
    assert "http" not in open(page).read().split("<body>")[1].replace("http://www.w3.org", ""), "self-contained"
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", f"file://{page}"],
                         capture_output=True, text=True, timeout=120).stdout
    results = re.search(r'<table class="sortable" id="results">.*?</table>', dom, re.S).group(0)
    assert len(re.findall(r"<tr>", results)) == 3, "a header and one row per run"
    assert "RE-Control (α=2.0, n=20)" in results and "Base" in results
    assert re.search(r'<img alt="toy_demo_rewards.png" src="data:image/png;base64,', dom)
    pairs = re.search(r'<table class="sortable pairs".*?</table>', dom, re.S).group(0)
    # the script ran: rows sorted by the change, largest first (prompt 1: +0.8, prompt 3: +0.3, prompt 2: +0.1)
    assert 'data-sorted-by="6:desc"' in pairs
    order = [int(n) for n in re.findall(r'<tr><td class="num" data-value="(\d+)">', pairs)]
    assert order == [1, 3, 2]
    # a response pair: base's answer beside the method's, escaped as text
    assert '<td class="answer base" data-value="0">Light scatters.</td>' in pairs
    assert "Light scatters &lt;b&gt;beautifully&lt;/b&gt;!" in pairs
