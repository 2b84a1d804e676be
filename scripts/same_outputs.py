"""Are two demo run folders the same? The check a refactor passes: stage-1 features, masks and responses, stage-2
labels, the value model's weights (its tensors: the file's metadata records wall time and memory), stage-4 responses
and stage-5 rewards, compared file by file.

    python scripts/same_outputs.py /tmp/before/runs/demo /tmp/after/runs/demo

Prints one line per file and exits 1 if any differs or is missing on one side.
"""
import argparse
import glob
import hashlib
import json
import os
import sys

PATTERNS = ["features/*.safetensors", "features/*.pth", "features/*_response_*.json", "features/*_labels_*.json",
            "response/*.json", "final_reward/*.json"]


def file_digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def weights_digest(path):
    """sha256 over the value model's tensors (names, dtypes, shapes and bytes), not the file's metadata."""
    import torch
    from safetensors.torch import load_file
    digest = hashlib.sha256()
    for name, tensor in sorted(load_file(path).items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def rewards_digest(path):
    """A stage-5 result's rewards (its other fields: averages of them and the run's name)."""
    with open(path) as f:
        return hashlib.sha256(json.dumps(json.load(f)["rewards"]).encode()).hexdigest()


def compared(root):
    files = {}
    for pattern in PATTERNS:
        for path in glob.glob(os.path.join(root, pattern)):
            if not path.endswith(".meta.json"):
                files[os.path.relpath(path, root)] = (rewards_digest if path.startswith(os.path.join(
                    root, "final_reward")) else file_digest)(path)
    for path in glob.glob(os.path.join(root, "trained_model", "value_model_*.safetensors")):
        files[os.path.relpath(path, root) + " (weights)"] = weights_digest(path)
    return files


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", help="a run folder (e.g. runs/demo of one commit)")
    parser.add_argument("after", help="the same run of another commit")
    args = parser.parse_args(argv)
    before, after = compared(args.before), compared(args.after)
    different = 0
    for name in sorted(set(before) | set(after)):
        verdict = ("identical" if before.get(name) == after.get(name) else
                   "missing in " + ("before" if name not in before else "after") if None in (
                       before.get(name), after.get(name)) else "DIFFERENT")
        different += verdict != "identical"
        print(f"{verdict:>18}  {name}")
    print(f"{len(set(before) | set(after)) - different} identical, {different} different or missing")
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main())
