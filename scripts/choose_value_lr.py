"""Choose the value model's learning rate on the TUNING split: stage 3 once per rate on the same stage-1/2 outputs,
the rate whose value model has the lowest loss on the tuning split's greedy answers kept.

    python scripts/choose_value_lr.py --output_dir runs/replicate/seed0 --lrs 0.0001,0.0003,0.001,0.003 \\
        --td_lambda 1 --val_fraction 0.1 --early_stopping True --epochs 100 --out results/smollm2_135M_demo_value_lr

Needs stages 1-2 on the training and tuning splits in --output_dir (scripts/replicate.sh writes them for each draw;
the demo's draw is seed 0). The loss is stage 3's own objective (with --td_lambda 1, the Monte-Carlo error: the sum
over the steps of (V(o_t) - r)^2 per response), read at the epoch stage 3 keeps. The test split is not read.
Writes OUT.json (every rate's losses and the choice) and OUT.md; scripts/demo_settings.sh's VALUE_LR is the choice
(tests/test_committed_figures.py checks it).
"""
import os
import sys
from dataclasses import dataclass

# run as a file outside the repository root (python DIR/FILE.py): the root holds utils
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils import cli  # noqa: E402
from utils.config import build, float_list, option  # noqa: E402
from utils.configs import ValueModelConfig  # noqa: E402
from utils.io import atomic_path, load_json, save_json  # noqa: E402
from utils.stages.stage3_value_model import run_train_value_model  # noqa: E402
from utils.value_model import value_model_fingerprint  # noqa: E402


@dataclass(frozen=True)
class LearningRateChoice:
    lrs: tuple = option((0.0001, 0.0003, 0.001, 0.003), "the learning rates to try", parse=float_list,
                        group="choice")
    out: str = option("results/smollm2_135M_demo_value_lr", "writes OUT.json and OUT.md", group="choice")


def main(argv=None):
    values = cli.parse(cli.build_parser(__doc__, LearningRateChoice, ValueModelConfig,
                                        exclude=("lr", "value_model", "eval_split")), argv)
    rows = []
    for lr in values["lrs"]:
        config = build(ValueModelConfig, values, lr=lr, eval_split="tune")
        cli.setup(config)
        stem = run_train_value_model(config)
        described = load_json(stem + ".json")
        rows.append({"lr": lr, "value_model": os.path.relpath(stem, config.output_dir),
                     "value_model_sha256": value_model_fingerprint(stem), "epoch": described["epoch"],
                     "tune_loss": described["test_loss"], "tune_terminal_loss": described["test_terminal_loss"],
                     "mean_predictor_terminal_loss": described["baseline_terminal_loss"]})
    chosen = min(rows, key=lambda r: r["tune_loss"])
    result = {"split": "tune", "criterion": "lowest tune loss at the epoch stage 3 keeps", "chosen_lr": chosen["lr"],
              "stage3_settings": {k: v for k, v in described["settings"].items() if k not in ("lr", "value_model")},
              "rows": rows}
    lines = ["| learning rate | epoch kept | tune loss | tune terminal loss (mean predictor) | chosen |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['lr']:g} | {r['epoch']} | {r['tune_loss']:.4f} | {r['tune_terminal_loss']:.4f} "
                     f"({r['mean_predictor_terminal_loss']:.4f}) | {'yes' if r is chosen else ''} |")
    lines += ["", f"Each value model trained by stage 3 on the same stage-1/2 outputs ({values['output_dir']}); the "
              f"loss is read on the tuning split's greedy answers at the epoch stage 3 keeps. Chosen: "
              f"{chosen['lr']:g}. Produced by `python scripts/choose_value_lr.py` (command in its docstring)."]
    table = "\n".join(lines) + "\n"
    save_json(result, values["out"] + ".json")
    with atomic_path(values["out"] + ".md") as tmp:
        with open(tmp, "w") as f:
            f.write(table)
    print(table + f"-> {values['out']}.json, .md")


if __name__ == "__main__":
    cli.main_guard(main)
