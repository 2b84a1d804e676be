"""Feature storage: file size and peak RAM of value-model training, the original layout against ours.

    python bench/features_memory.py --run_dir runs/demo            # the demo's features (run scripts/demo.sh first)
    python bench/features_memory.py --run_dir runs/demo --scale 10  # the same sequences repeated 10 times

Layouts, built in a temporary folder from the run's train/test features:
  original: padded [N, T, d] float32 .pth, as the original repository wrote it, loaded whole by training
  packed .pth: valid steps only, float16, torch.save (this repository before the streaming change), memory-mapped
  ours: valid steps only, float16 safetensors, read a batch at a time
Each layout is trained for 2 epochs (lr 1e-3, batch 512) in a fresh process with one torch thread; peak RAM is the
process's VmHWM minus its RSS just before the features are opened. Writes bench/features_memory.json and .md.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# run as a file outside the repository root (python DIR/FILE.py): the root holds utils
sys.path.insert(0, ROOT)

M, D = "smollm2_135M", "demo"

TRAIN = """
import sys, torch
sys.path.insert(0, {root!r})
torch.set_num_threads(1)
import train_value_model
def rss(key):
    return int(next(l for l in open('/proc/self/status') if l.startswith(key)).split()[1]) * 1024
open('/proc/self/clear_refs', 'w').write('5')
before = rss('VmRSS:')
train_value_model.main(['--model_name', {m!r}, '--dataset_name', {d!r}, '--lr', '0.001', '--epochs', '2',
                        '--device', 'cpu', '--output_dir', {out!r}])
print('PEAK', rss('VmHWM:') - before)
"""


def build(layout, source, out, scale):
    import torch

    from utils.features import FeatureFile, write_rows
    from utils.io import features_path, save_tensors
    for split in ("train", "test"):
        rows = FeatureFile(features_path(source, M, D, "token_wise_activations", split))
        mask = torch.load(features_path(source, M, D, "mask", split), weights_only=True).repeat(scale, 1)
        labels = torch.load(features_path(source, M, D, "labels", split), weights_only=True).repeat(scale)
        packed = rows.read([(0, rows.shape[0])]).repeat(scale, 1)
        path = features_path(out, M, D, "token_wise_activations", split)
        if layout == "ours":
            write_rows(path, packed.shape[0], packed.shape[1], torch.float16, [(0, packed)])
        elif layout == "packed .pth":
            save_tensors(packed.half(), path.removesuffix(".safetensors") + ".pth")
        else:
            padded = torch.zeros(*mask.shape, packed.shape[1])
            padded[mask] = packed.float()
            save_tensors(padded, path.removesuffix(".safetensors") + ".pth")
        save_tensors(mask, features_path(out, M, D, "mask", split))
        save_tensors(labels, features_path(out, M, D, "labels", split))
    return sum(os.path.getsize(os.path.join(out, "features", f)) for f in os.listdir(os.path.join(out, "features"))
               if "token_wise_activations" in f)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run_dir", type=str, default="runs/demo", help="a run folder with the demo's features")
    parser.add_argument("--scale", type=int, default=1, help="repeat the sequences this many times")
    args = parser.parse_args()
    records = []
    for layout in ("original", "packed .pth", "ours"):
        with tempfile.TemporaryDirectory() as out:
            size = build(layout, args.run_dir, out, args.scale)
            code = TRAIN.format(root=ROOT, m=M, d=D, out=out)
            result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    env=dict(os.environ, OMP_NUM_THREADS="1"))
            if result.returncode:
                sys.exit(result.stderr[-2000:])
            peak = int(result.stdout.split("PEAK")[-1].split()[0])
        records.append({"layout": layout, "file_mb": round(size / 2 ** 20, 2), "peak_ram_mb": round(peak / 2 ** 20, 1)})
        print(records[-1])
    suffix = f"_x{args.scale}" if args.scale > 1 else ""
    command = f"python bench/features_memory.py --run_dir {args.run_dir}" + (f" --scale {args.scale}" if suffix else "")
    with open(os.path.join(ROOT, "bench", f"features_memory{suffix}.json"), "w") as f:
        json.dump({"command": command, "records": records}, f, indent=1)
    lines = [f"Command: `{command}`", "", "| layout | features on disk (MB) | peak RAM of 2 training epochs (MB) |",
             "|---|---|---|"] + [f"| {r['layout']} | {r['file_mb']} | {r['peak_ram_mb']} |" for r in records]
    with open(os.path.join(ROOT, "bench", f"features_memory{suffix}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
