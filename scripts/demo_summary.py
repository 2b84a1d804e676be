"""Print the demo's result: base vs RE-Control mean reward, the paired difference and diversity."""
import argparse
import json
import os


def read(path):
    with open(path) as f:
        return json.load(f)


parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--output_dir", type=str, required=True, help="the demo's output folder")
parser.add_argument("--base", type=str, required=True, help="run name of the base generation")
parser.add_argument("--run", type=str, required=True, help="run name of the RE-Control generation")
parser.add_argument("--value_model", type=str, required=True, help="the value model's .json description")
args = parser.parse_args()

reward = {r: read(os.path.join(args.output_dir, "final_reward", f"{r}.json")) for r in (args.base, args.run)}
evaluation = {r: read(os.path.join(args.output_dir, "evaluations", f"{r}.json")) for r in (args.base, args.run)}
meta = {r: read(os.path.join(args.output_dir, "response", f"{r}.meta.json")) for r in (args.base, args.run)}
value_model = read(args.value_model)
steered = reward[args.run]
print(f"\n{'method':<12} {'mean reward':>16} {'diversity':>10} {'time (s)':>9}")
for name, run in (("base", args.base), ("RE-Control", args.run)):
    r = reward[run]
    print(f"{name:<12} {r['average_reward']:>8.4f} ± {r['standard_error']:.4f} {evaluation[run]['diversity']:>10.3f} "
          f"{meta[run]['seconds']:>9.1f}")
diff, se = steered["paired_difference"], steered["paired_standard_error"]
ratio = evaluation[args.run]["diversity"] / evaluation[args.base]["diversity"]
print(f"\nRE-Control - base: {diff:+.4f} ± {se:.4f} (paired SE, n = {steered['count']}): {diff / se:.2f} SE; "
      f"diversity {ratio:.2f}x base")
print(f"step size {meta[args.run]['step_size']}, updates {meta[args.run]['num_updates']}; value model "
      f"{value_model['num_layers']} layers x {value_model['hidden_dim']}, test loss {value_model['test_loss']:.4f} "
      f"(terminal {value_model['test_terminal_loss']:.4f}; predicting the mean: "
      f"{value_model['baseline_terminal_loss']:.4f})")
