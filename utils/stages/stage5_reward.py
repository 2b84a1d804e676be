"""Stage 5: the average reward of a run's responses (see measure_reward.py for the files)."""
from utils.errors import UsageError
from utils.io import (
    file_sha256,
    load_records,
    load_reward_record,
    output_path,
    response_path,
    run_settings,
    save_json,
    write_sidecar,
)
from utils.metrics import cut_at_next_turn, reward_result
from utils.rewards import heldout_scorer, load_reward_model
from utils.runs import BatchRun, refuse_overwrite, written_with


def run_measure_reward(args, reward_model=None):
    """Stage 5 (a MeasureRewardConfig), skipped if its result was written from the same files and settings; returns
    the result's path (None in a process that does not write it)."""
    out = output_path(args.output_dir, "reward", args.out_file)
    responses = response_path(args.output_dir, args.out_file)
    baseline_path = output_path(args.output_dir, "reward", args.baseline) if args.baseline else None
    settings = run_settings(args, responses_sha256=file_sha256(responses),
                            baseline_sha256=file_sha256(baseline_path) if baseline_path else None)
    if written_with(out, settings):
        print(f"{args.out_file}: already scored with these settings -> {out} (skipped)")
        return out
    refuse_overwrite(out, settings, args.overwrite)
    heldout = heldout_scorer(args.heldout_reward_model, args.reward_model)
    # ------------------------------------------------------------------------------------------------------ load
    records = load_records(responses, "inference_intervention.py")
    baseline = None
    if args.baseline:
        baseline = load_reward_record(baseline_path, f"measure_reward.py --out_file {args.baseline}")
    reward_model = reward_model or load_reward_model(args.reward_model, args.device, args.dtype, args.batch_size,
                                                     args.trust_remote_code)
    # ------------------------------------------------------------------------------------------------------ run
    answers = [cut_at_next_turn(r["results"]) for r in records]
    conversations = [r.get("conversation", r["prompt"]) for r in records]
    run, rewards = reward_model.score_run(conversations, answers,
                                          lambda n: BatchRun(out, settings, n, args.overwrite))
    if rewards is None:
        return None  # another process writes the result
    if heldout:  # cheap lexicons, or a second model: scored whole, in the main process
        scores = load_reward_model(heldout, args.device, args.dtype, args.batch_size,
                                   args.trust_remote_code).score(conversations, answers, progress=False)
        heldout = (heldout, scores)
    try:
        result = reward_result(args.out_file, args.reward_model, rewards, baseline, heldout)
    except ValueError as err:
        raise UsageError(f"--baseline {args.baseline}: {err}")
    print(f"{args.out_file}: average reward {result['average_reward']:.4f} ± {result['standard_error']:.4f} "
          f"(n = {len(rewards)}, {args.reward_model})")
    if baseline is not None:
        diff, diff_se = result["paired_difference"], result["paired_standard_error"]
        print(f"  vs {args.baseline} ({baseline['average_reward']:.4f}): difference {diff:+.4f} ± {diff_se:.4f} "
              f"(paired SE; {diff / diff_se if diff_se else float('nan'):.2f} SE)")
    if "heldout" in result:
        h = result["heldout"]
        print(f"  held-out scorer {h['reward_model']}: {h['average_reward']:.4f} ± {h['standard_error']:.4f}"
              + (f"; vs {args.baseline} {h['paired_difference']:+.4f} ± {h['paired_standard_error']:.4f}"
                 if "paired_difference" in h else ""))
    # ------------------------------------------------------------------------------------------------------ save
    save_json(result, out)
    write_sidecar(out, args, settings)
    run.finish()
    return out
