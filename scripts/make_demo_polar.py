"""Write dataset/demo_polar_{train,tune,test}.jsonl: the demo's prompts, each asking for an answer of one polarity.

    python scripts/make_demo_polar.py           # rewrites the three files (deterministic)
    python scripts/make_demo_polar.py --check   # exit 1 if the committed files differ from what it would write

The prompt-dependent task (docs/results.md#the-prompt-dependent-task). Every demo question (same id, same split: the
splits stay disjoint) is prefixed with an instruction that asks for a warm answer or for a frank, critical one,
alternating within each split, with two wordings per side. The record keeps the request: `polarity` ('warm' or
'frank'), `instruction`, and the demo question in `source_question`. Its reward, vader_polar (utils/rewards.py),
is VADER's sentiment of the answer times +1 for a warm request and -1 for a frank one; TextBlob's polarity with the
same sign (textblob_polar) is its held-out scorer. No fixed direction in the hidden state can serve both halves:
what raises one half's reward lowers the other's.
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from utils.rewards import POLAR_INSTRUCTIONS  # noqa: E402

SPLITS = ("train", "tune", "test")


def polar_records(records):
    """The demo records with their instruction: polarity alternates (warm first), wordings alternate per side."""
    warm = [i for i, sign in POLAR_INSTRUCTIONS.items() if sign > 0]
    frank = [i for i, sign in POLAR_INSTRUCTIONS.items() if sign < 0]
    out = []
    for k, record in enumerate(records):
        polarity = "warm" if k % 2 == 0 else "frank"
        wordings = warm if polarity == "warm" else frank
        instruction = wordings[(k // 2) % len(wordings)]
        out.append({"id": record["id"], "question": f"{instruction} {record['question']}", "polarity": polarity,
                    "instruction": instruction, "source_question": record["question"]})
    return out


def render(split):
    with open(os.path.join(ROOT, "dataset", f"demo_{split}.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in polar_records(records))


def main(argv=None):
    check = "--check" in (argv if argv is not None else sys.argv[1:])
    stale = []
    for split in SPLITS:
        path = os.path.join(ROOT, "dataset", f"demo_polar_{split}.jsonl")
        text = render(split)
        if check:
            with open(path, encoding="utf-8") as f:
                if f.read() != text:
                    stale.append(path)
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    if stale:
        print(f"{', '.join(stale)} out of date: run python scripts/make_demo_polar.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
