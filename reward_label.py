"""Stage 2: score every stage-1 response with a reward model; the scores are the value model's terminal targets.

The paper's command line (GPU, hub access):
    python reward_label.py --model_name llama3_8B --dataset_name shp --reward_model openbmb/UltraRM-13b --mode train

The embedded offline default (VADER sentiment of the answer):
    python reward_label.py --model_name smollm2_135M --dataset_name demo --reward_model vader --mode train

Reads features/{m}_{d}_response_{mode}.json; writes features/{m}_{d}_labels_{mode}.json, a saved float tensor
(the original's name, despite the extension).
"""
import torch

from utils import cli
from utils.io import features_path, load_records, model_tag, run_settings, save_tensors, write_sidecar
from utils.rewards import load_reward_model
from utils.runs import BatchRun, refuse_overwrite


def parse_args(argv=None):
    parser = cli.make_parser(__doc__)
    parser.add_argument("--model_name", type=str, default="smollm2_135M",
                        help="the policy LLM whose stage-1 responses are scored (names the files)")
    parser.add_argument("--dataset_name", type=str, default="demo", help="data set name used in stage 1")
    parser.add_argument("--mode", type=str, default="train",
                        help="which split to label: train, test, or any other split stage 1 wrote (e.g. tune)")
    cli.add_reward_stage_args(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cli.setup(args)
    m = model_tag(args.model_name)
    out = features_path(args.output_dir, m, args.dataset_name, "labels", args.mode)
    settings = run_settings(args)
    refuse_overwrite(out, settings, args.overwrite)
    # ------------------------------------------------------------------------------------------------------ load
    records = load_records(features_path(args.output_dir, m, args.dataset_name, "response", args.mode),
                        stage_hint="get_activations_only.py")
    reward_model = load_reward_model(args.reward_model, args.device, args.dtype, args.batch_size,
                                     args.trust_remote_code)
    # ------------------------------------------------------------------------------------------------------ run
    conversations = [r.get("conversation", r["prompt"]) for r in records]
    run, rewards = reward_model.score_run(conversations, [r["results"] for r in records],
                                          lambda n: BatchRun(out, settings, n, args.overwrite))
    if rewards is None:
        return  # another process writes the labels
    # ------------------------------------------------------------------------------------------------------ save
    rewards = torch.tensor(rewards, dtype=torch.float32)
    if not torch.isfinite(rewards).all():
        raise cli.UsageError(f"the reward model gave NaN or inf for {int((~torch.isfinite(rewards)).sum())} "
                             f"responses; check --reward_model and its --dtype (float16 overflows: try float32)")
    save_tensors(rewards, out)
    write_sidecar(out, args, settings, count=len(rewards), mean=rewards.mean().item(), std=rewards.std().item())
    run.finish()
    print(f"{args.mode}: {len(rewards)} rewards, mean {rewards.mean():.4f}, std {rewards.std():.4f} -> {out}")


if __name__ == "__main__":
    cli.main_guard(main)
