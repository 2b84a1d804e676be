"""Choosing a method's strength on a tuning split: the paper's rule, a constrained rule, and reading the choice back.

The paper (section 5) picks the step size alpha and the number of updates n on held-out training prompts by the
maximum of coherence + diversity + average reward. Larger settings raise the reward until fluency collapses, so the
constrained rule takes the highest reward among the cells that keep diversity >= 0.9x and coherence >= 0.95x base.
"""
import math
import os
import sys

from utils.errors import UsageError
from utils.io import load_json

RULES = ("paper", "constrained")
SHORT_NAMES = {"step_size": "alpha", "num_updates": "n"}  # the paper's symbols, in tables and plots


def paper_score(cell):
    return cell["coherence"] + cell["diversity"] + cell["average_reward"]


def feasible(cell, base, min_diversity_ratio, min_coherence_ratio):
    return (cell["diversity"] >= min_diversity_ratio * base["diversity"]
            and cell["coherence"] >= min_coherence_ratio * base["coherence"])


def choose(cells, base, min_diversity_ratio=0.9, min_coherence_ratio=0.95):
    """{rule: the chosen cell (or None if no cell qualifies)}; ties go to the earlier cell (the grid's order)."""
    def best(candidates, key):
        return max(candidates, key=key) if candidates else None
    return {
        "paper": best(cells, paper_score),
        "constrained": best([c for c in cells if feasible(c, base, min_diversity_ratio, min_coherence_ratio)],
                            lambda c: c["average_reward"]),
    }


def read_choice(path, method, model_name=None, rule=None):
    """The setting a sweep result chose for `method` ({option: value} of the swept options, e.g. {step_size,
    num_updates}), and the sweep's value model path (or None). `rule` overrides the rule the sweep was run with."""
    result = load_json(path, stage_hint="sweep.py")
    if not isinstance(result, dict) or "chosen" not in result or "cells" not in result:
        raise UsageError(f"{path} is not a sweep result (no 'chosen' and 'cells'); write one with sweep.py")
    if result.get("method") != method:
        raise UsageError(f"{path} chose a setting for {result.get('method')!r}, not {method!r}; sweep this method "
                         f"(sweep.py --method {method})")
    if model_name is not None and result.get("model_name") != model_name:
        raise UsageError(f"{path} was swept on {result.get('model_name')!r}, not {model_name!r}; sweep this model")
    rule = rule or result["rule"]
    chosen = result["rules"].get(rule) if rule != result["rule"] else result["chosen"]
    if chosen is None:
        raise UsageError(f"{path}: no cell satisfies the {rule} rule; widen the grid (smaller settings) and sweep "
                         f"again, or pass the setting by hand")
    from utils.decoding import get_method
    keys = result.get("tuned") or get_method(method).tuned  # results written before "tuned" was recorded
    setting = {key: chosen[key] for key in keys}
    return setting, result.get("value_model")


def chosen_for(path, fingerprint):
    """Whether the sweep result at `path` chose its setting for the value model whose weights have this sha256
    (utils.value_model.value_model_fingerprint); False for a sweep that records none (an older one)."""
    return fingerprint is not None and load_json(path, stage_hint="sweep.py").get("value_model_sha256") == fingerprint


def describe(cell, keys):
    """'alpha 3, n 10' for the swept options `keys` (in the order alpha first, as the paper writes them)."""
    if cell is None:
        return "none"
    ordered = sorted(keys, key=lambda k: list(SHORT_NAMES).index(k) if k in SHORT_NAMES else -1)
    return ", ".join(f"{SHORT_NAMES.get(k, k)} {cell[k]:g}" for k in ordered)


def ratio(value, base):
    return f" ({value / base:.2f}x)" if base else ""


def paired_text(diff, se):
    """'+0.1234 ± 0.0321 (3.8 SE)', or '—' for a row without a paired difference."""
    if diff is None:
        return "—"
    return f"{diff:+.4f} ± {se:.4f}" + (f" ({diff / se:.1f} SE)" if se and se > 1e-9 else "")


def grid_table(cells, base, chosen, keys):
    """Markdown: one row per cell, the chosen ones marked (and the held-out scorer's difference, when scored)."""
    heldout = base.get("heldout_reward_model")
    columns = ["setting", "average reward", "vs base (paired)", "diversity", "coherence", "rep-4", "paper score",
               "chosen by"] + ([f"held-out {heldout} vs base"] if heldout else [])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for cell in [base] + cells:
        rules = [rule for rule, c in chosen.items() if c is not None and c["run"] == cell["run"]]
        lines.append("| " + " | ".join([
            "base" if cell is base else describe(cell, keys),
            f"{cell['average_reward']:.4f} ± {cell['standard_error']:.4f}",
            paired_text(cell.get("paired_difference"), cell.get("paired_standard_error")),
            f"{cell['diversity']:.3f}{ratio(cell['diversity'], base['diversity'])}",
            f"{cell['coherence']:.3f}{ratio(cell['coherence'], base['coherence'])}",
            f"{cell['rep-4']:.2f}", f"{paper_score(cell):.4f}", ", ".join(rules) or ""]
            + ([paired_text(cell.get("heldout_paired_difference"), cell.get("heldout_paired_standard_error"))]
               if heldout else [])) + " |")
    return "\n".join(lines) + "\n"


def plot_grid(cells, base, chosen, keys, path, label="cells"):
    """Reward and diversity over the grid, the chosen cells marked: a heat map over two swept options (alpha x n),
    or lines over one."""
    from utils.io import new_figure, save_figure
    fig, axes = new_figure(ncols=2, figsize=(10, 4))
    marks = {"paper": ("*", "red"), "constrained": ("o", "black")}
    for ax, key, title in zip(axes, ("average_reward", "diversity"), ("average reward", "diversity")):
        if len(keys) != 2:
            x = keys[0]
            ax.plot([c[x] for c in cells], [c[key] for c in cells], "-o", label=label)
            ax.axhline(base[key], color="gray", linestyle=":", label="base")
            for rule, cell in chosen.items():
                if cell is not None:
                    ax.plot(cell[x], cell[key], marks[rule][0], color=marks[rule][1], markersize=14,
                            fillstyle="none", label=f"{rule} rule")
            ax.set_xlabel(SHORT_NAMES.get(x, x))
            ax.legend(fontsize=7)
        else:
            rows, columns = keys  # outer option on the y axis (n), inner on the x axis (alpha)
            xs = sorted({c[columns] for c in cells})
            ys = sorted({c[rows] for c in cells})
            grid = [[math.nan] * len(xs) for _ in ys]
            for c in cells:
                grid[ys.index(c[rows])][xs.index(c[columns])] = c[key]
            image = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
            fig.colorbar(image, ax=ax, label=f"{title} (base {base[key]:.3f})")
            ax.set_xticks(range(len(xs)), [f"{a:g}" for a in xs])
            ax.set_yticks(range(len(ys)), [f"{n:g}" for n in ys])
            ax.set_xlabel({"step_size": "step size alpha"}.get(columns, columns))
            ax.set_ylabel({"num_updates": "number of updates n"}.get(rows, rows))
            for rule, cell in chosen.items():
                if cell is not None:
                    ax.plot(xs.index(cell[columns]), ys.index(cell[rows]), marks[rule][0],
                            color=marks[rule][1], markersize=16, fillstyle="none", markeredgewidth=2,
                            label=f"{rule} rule")
            ax.legend(fontsize=7, loc="upper left")
        ax.set_title(title)
    fig.suptitle(os.path.basename(path).removesuffix(".png"))
    save_figure(fig, path)


def main(argv=None):
    """`python -m utils.sweep SWEEP VALUE_MODEL`: exit 0 if SWEEP chose its setting for VALUE_MODEL (a stem or file),
    1 if for another one or none yet (the shell's test in scripts/demo.sh)."""
    import argparse

    from utils.value_model import value_model_fingerprint
    parser = argparse.ArgumentParser(prog="python -m utils.sweep", description=main.__doc__)
    parser.add_argument("sweep", help="a sweep result (sweep.py's results/*_sweep.json)")
    parser.add_argument("value_model", help="the value model's path (with or without .safetensors)")
    args = parser.parse_args(argv)
    stem = args.value_model.removesuffix(".safetensors").removesuffix(".pth")
    try:
        return 0 if chosen_for(args.sweep, value_model_fingerprint(stem)) else 1
    except UsageError as err:  # no readable sweep: none was chosen for it either
        print(f"python -m utils.sweep: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
