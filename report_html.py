"""One self-contained HTML page per run folder: the results table, the plots, and the responses side by side.

    python report_html.py --model_name smollm2_135M --dataset_name demo --output_dir runs/demo

Reads what make_table.py reads (stages 5-7 and the run times of the runs {m}_{d}_* on the base run's split), the
responses of each run, and every PNG under results/ and trained_model/. Writes results/{m}_{d}_report.html: no
external file or network resource, so it can be mailed or attached. For each method, its answers stand beside
base's for the same prompt with both rewards; click a column header to sort (by default the largest reward gain
comes first).
"""
import base64
import glob
import html
import os

from utils import cli
from utils.configs import TableConfig
from utils.io import atomic_path, load_records, output_path, response_path
from utils.names import model_tag
from utils.table import gather

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}
table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}th{background:#f3f3f3;cursor:pointer}
td.num{text-align:right;font-variant-numeric:tabular-nums}.answer{white-space:pre-wrap;max-width:520px}
img{max-width:680px;margin:0.5em}details{margin:1em 0}summary{font-size:1.15em;font-weight:600;cursor:pointer}"""

SCRIPT = """function sortTable(table, column, descending) {
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = a.cells[column].dataset.value, y = b.cells[column].dataset.value;
    const nx = parseFloat(x), ny = parseFloat(y);
    const order = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
    return descending ? -order : order;
  });
  rows.forEach(r => body.appendChild(r));
  table.dataset.sortedBy = column + (descending ? ":desc" : ":asc");
}
document.querySelectorAll("table.sortable").forEach(table => {
  table.querySelectorAll("th").forEach((th, column) => th.addEventListener("click", () => {
    sortTable(table, column, table.dataset.sortedBy !== column + ":desc");
  }));
  if (table.dataset.defaultSort) sortTable(table, parseInt(table.dataset.defaultSort), true);
});"""


def build_parser():
    return cli.build_parser(__doc__, TableConfig)


def parse_args(argv=None):
    return cli.parse_config(build_parser(), TableConfig, argv)


def cell(value, digits=3, numeric=True):
    text = "—" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))
    sort_key = "" if value is None else value
    return f'<td class="{"num" if numeric else ""}" data-value="{html.escape(str(sort_key))}">{html.escape(text)}</td>'


def results_table(rows):
    heads = ["method", "split", "diversity", "coherence", "average reward", "± SE", "vs base", "± SE",
             "win rate %", "time (s)"]
    lines = ['<table class="sortable" id="results"><thead><tr>' + "".join(f"<th>{h}</th>" for h in heads)
             + "</tr></thead><tbody>"]
    for r in rows:
        lines.append("<tr>" + cell(r["method"], numeric=False) + cell(r["split"], numeric=False)
                     + cell(r["diversity"]) + cell(r["coherence"]) + cell(r["average reward"], 4)
                     + cell(r["reward SE"], 4) + cell(r["vs base"], 4) + cell(r["vs base SE"], 4)
                     + cell(r["win rate %"], 1) + cell(r["time (s)"], 1) + "</tr>")
    return "\n".join(lines) + "</tbody></table>"


def answer_of(record):
    return record.get("results", "")


def pairs_table(run, records, base_records, rewards, base_rewards):
    """Per prompt: the prompt, base's answer and reward, the method's answer and reward, the change."""
    heads = ["#", "prompt", "base answer", "base reward", "answer", "reward", "change"]
    lines = [f'<table class="sortable pairs" data-run="{html.escape(run)}" data-default-sort="6"><thead><tr>'
             + "".join(f"<th>{h}</th>" for h in heads) + "</tr></thead><tbody>"]
    for i, (record, base, reward, base_reward) in enumerate(zip(records, base_records, rewards, base_rewards)):
        prompt = record.get("conversation", record.get("prompt", ""))
        lines.append("<tr>" + cell(i + 1) + f'<td class="answer" data-value="{i}">{html.escape(prompt)}</td>'
                     + f'<td class="answer base" data-value="{i}">{html.escape(answer_of(base))}</td>'
                     + cell(base_reward, 4)
                     + f'<td class="answer method" data-value="{i}">{html.escape(answer_of(record))}</td>'
                     + cell(reward, 4) + cell(reward - base_reward, 4) + "</tr>")
    return "\n".join(lines) + "</tbody></table>"


def image_tags(paths):
    tags = []
    for path in paths:
        with open(path, "rb") as f:
            data = base64.b64encode(f.read()).decode()
        name = html.escape(os.path.basename(path))
        tags.append(f'<figure><img alt="{name}" src="data:image/png;base64,{data}"><figcaption>{name}</figcaption>'
                    f"</figure>")
    return "\n".join(tags)


def main(argv=None):
    args = parse_args(argv)
    prefix = f"{model_tag(args.model_name)}_{args.dataset_name}_"
    base_name = args.base or prefix + "base"
    # ------------------------------------------------------------------------------------------------------ load
    rows = gather(args.output_dir, prefix, base_name)
    base_records = load_records(response_path(args.output_dir, base_name), "inference_intervention.py")
    base_rewards = next((r["rewards"] for r in rows if r["run"] == base_name), None)
    if base_rewards is None:
        raise cli.UsageError(f"the base run {base_name} is not scored; run measure_reward.py --out_file {base_name}")
    plots = sorted(glob.glob(output_path(args.output_dir, "results", "*", "png"))
                   + glob.glob(os.path.join(args.output_dir, "trained_model", "*_loss.png")))
    # ------------------------------------------------------------------------------------------------------ build
    sections = []
    for row in rows:
        if row["run"] == base_name:
            continue
        records = load_records(response_path(args.output_dir, row["run"]), "inference_intervention.py")
        if len(records) != len(base_records) or len(row["rewards"]) != len(records):
            print(f"skipped {row['run']}: it did not answer the base run's prompts")
            continue
        change = "" if row["vs base"] is None else f" — vs base {row['vs base']:+.4f} ± {row['vs base SE']:.4f}"
        sections.append(f"<details open><summary>{html.escape(row['method'])} ({html.escape(row['run'])}){change}"
                        f"</summary>" + pairs_table(row["run"], records, base_records, row["rewards"], base_rewards)
                        + "</details>")
    title = f"{prefix}report: {os.path.abspath(args.output_dir)}"
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<h2>Results</h2>{results_table(rows)}<h2>Plots</h2>{image_tags(plots) or '<p>none</p>'}"
            f"<h2>Responses beside base's</h2><p>Click a column header to sort; the largest reward gain comes first."
            f"</p>{''.join(sections) or '<p>no other run</p>'}"
            f"<script>{SCRIPT}</script></body></html>")
    # ------------------------------------------------------------------------------------------------------ save
    out = output_path(args.output_dir, "results", f"{prefix}report", "html")
    with atomic_path(out) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(page)
    print(f"-> {out} ({len(rows)} runs, {len(plots)} plots, {os.path.getsize(out)} bytes)")


if __name__ == "__main__":
    cli.main_guard(main)
