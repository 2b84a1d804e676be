"""Stage 2: score every stage-1 response with a reward model (see reward_label.py for the files)."""
import torch

from utils.errors import UsageError
from utils.io import features_path, load_records, run_settings, save_tensors, write_sidecar
from utils.names import model_tag, named_dataset
from utils.rewards import load_reward_model
from utils.runs import BatchRun, refuse_overwrite


def run_reward_label(args, reward_model=None):
    """Stage 2 on parsed flags; returns the labels path (None in a process that does not write it)."""
    m, d = model_tag(args.model_name), named_dataset(args)
    out = features_path(args.output_dir, m, d, "labels", args.mode)
    settings = run_settings(args)
    refuse_overwrite(out, settings, args.overwrite)
    # ------------------------------------------------------------------------------------------------------ load
    records = load_records(features_path(args.output_dir, m, d, "response", args.mode),
                        stage_hint="get_activations_only.py")
    reward_model = reward_model or load_reward_model(args.reward_model, args.device, args.dtype, args.batch_size,
                                                     args.trust_remote_code)
    # ------------------------------------------------------------------------------------------------------ run
    conversations = [r.get("conversation", r["prompt"]) for r in records]
    run, rewards = reward_model.score_run(conversations, [r["results"] for r in records],
                                          lambda n: BatchRun(out, settings, n, args.overwrite))
    if rewards is None:
        return None  # another process writes the labels
    # ------------------------------------------------------------------------------------------------------ save
    rewards = torch.tensor(rewards, dtype=torch.float32)
    if not torch.isfinite(rewards).all():
        raise UsageError(f"the reward model gave NaN or inf for {int((~torch.isfinite(rewards)).sum())} "
                             f"responses; check --reward_model and its --dtype (float16 overflows: try float32)")
    save_tensors(rewards, out)
    write_sidecar(out, args, settings, count=len(rewards), mean=rewards.mean().item(), std=rewards.std().item())
    run.finish()
    print(f"{args.mode}: {len(rewards)} rewards, mean {rewards.mean():.4f}, std {rewards.std():.4f} -> {out}")
    return out
