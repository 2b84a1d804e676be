"""The fine-tuning baselines (finetune_baseline.py): LoRA DPO on preference pairs, and LoRA RLOO online with the
reward model, both on TRL's trainers and peft. The paper compares RE-Control with LoRA PPO and LoRA DPO; TRL 1.x has
no PPOTrainer, so the online baseline is RLOO (REINFORCE with a leave-one-out baseline, TRL's RLOOTrainer), which
takes the reward model as a function."""
import dataclasses
import itertools
import os
import shutil
import time

from utils.data import conversation_text, format_prompt, load_prompts, load_records, parse_hh_dialogue
from utils.errors import UsageError
from utils.io import (
    adapter_meta_path,
    adapter_path,
    describe_run,
    features_path,
    load_tensors,
    new_figure,
    peak_memory_mb,
    read_json_or_none,
    run_settings,
    save_csv,
    save_figure,
    save_json,
    sidecar_path,
)
from utils.io import (
    load_records as load_response_records,
)
from utils.metrics import cut_at_next_turn
from utils.models import load_model_and_tokenizer, load_policy_tokenizer, resolve_device, resolve_model
from utils.names import model_tag
from utils.rewards import load_reward_model
from utils.runs import refuse_overwrite

METHODS = {"dpo": "DPO", "rloo": "RLOO"}
DEFAULT_BETA = {"dpo": 0.1, "rloo": 0.05}  # TRL's defaults: DPO's beta, RLOO's KL coefficient


# ----------------------------------------------------------------------------------------------------------------------
# Preference pairs

def completion_text(prompt, generation):
    """The answer as it follows the prompt: after the paper's 'Assistant:' a space, after a chat template's
    'assistant\\n' nothing (stage 1 stores the generation stripped)."""
    return generation if not prompt or prompt[-1].isspace() else " " + generation


def rollout_pairs(records, rewards, num_samples):
    """Best against worst response by reward, per prompt, from stage 1's K responses per prompt in a row.

    Returns (pairs, ties): pairs {prompt, chosen, rejected, conversation}; prompts whose best and worst rewards are
    equal give no preference and are counted in `ties`. The first of equal maxima (minima) is taken.
    """
    if len(records) != len(rewards):
        raise UsageError(f"{len(records)} stage-1 responses but {len(rewards)} labels; re-run reward_label.py")
    if num_samples < 2:
        raise UsageError("DPO pairs need at least 2 responses per prompt: run get_activations_only.py with "
                         "--num_samples 2 or more (stage 1 wrote one greedy response per prompt)")
    if len(records) % num_samples:
        raise UsageError(f"{len(records)} stage-1 responses are not {num_samples} per prompt; re-run stage 1")
    pairs, ties = [], 0
    for start in range(0, len(records), num_samples):
        group, scores = records[start:start + num_samples], [float(r) for r in rewards[start:start + num_samples]]
        if len({r["prompt"] for r in group}) != 1:
            raise UsageError(f"stage-1 responses {start}-{start + num_samples - 1} do not share one prompt: the file "
                             f"is not {num_samples} responses per prompt in a row; re-run stage 1")
        best, worst = scores.index(max(scores)), scores.index(min(scores))
        if scores[best] == scores[worst]:
            ties += 1
            continue
        prompt = group[0]["prompt"]
        pairs.append({"prompt": prompt, "chosen": completion_text(prompt, group[best]["results"]),
                      "rejected": completion_text(prompt, group[worst]["results"]),
                      "conversation": group[0].get("conversation", prompt)})
    return pairs, ties


def has_dataset_pairs(record):
    return ("chosen" in record and "rejected" in record) or {"human_ref_A", "human_ref_B", "labels"} <= set(record)


def dataset_pairs(records, spec, tokenizer):
    """The data set's own preferences: HH-RLHF's chosen/rejected dialogues (the prompt is the dialogue cut at its last
    'Assistant:', as in stage 1; the answers are what follows it), SHP's human_ref_A/B with labels (1 = A preferred)."""
    pairs, ties = [], 0
    for record in records:
        if "chosen" in record:
            turns = parse_hh_dialogue(record["chosen"])
            answers = [text[text.rfind("Assistant:") + len("Assistant:"):].strip()
                       for text in (record["chosen"], record["rejected"])]
        elif {"human_ref_A", "human_ref_B", "labels"} <= set(record):
            turns = [("user", record["history"].strip())]
            a, b = record["human_ref_A"].strip(), record["human_ref_B"].strip()
            answers = [a, b] if int(record["labels"]) == 1 else [b, a]
        else:
            raise UsageError(f"a record has neither chosen/rejected (HH-RLHF) nor human_ref_A/B and labels (SHP) "
                             f"(it has: {', '.join(sorted(record))}); use --pairs rollouts for stage-1 rollouts")
        if answers[0] == answers[1]:
            ties += 1
            continue
        prompt = format_prompt(turns, spec, tokenizer)
        pairs.append({"prompt": prompt, "chosen": completion_text(prompt, answers[0]),
                      "rejected": completion_text(prompt, answers[1]),
                      "conversation": conversation_text(turns)})
    return pairs, ties


def stage1_num_samples(path, records):
    """K of stage 1 (responses per prompt) from its .meta.json; without one, the length of the first run of equal
    prompts."""
    settings = (read_json_or_none(sidecar_path(path)) or {}).get("settings") or {}
    return settings.get("num_samples") or len(list(next(itertools.groupby(records, key=lambda r: r["prompt"]))[1]))


def preference_data(args, spec, tokenizer):
    """(pairs, ties, source) for DPO, as --pairs says."""
    m = model_tag(args.model_name)
    source = args.pairs
    if source == "auto":
        first = load_records(args.dataset_name, args.split, args.data_file, args.dataset_path)[0] if (
            args.dataset_name in ("hh_rlhf", "shp") or args.data_file) else {}
        source = "dataset" if has_dataset_pairs(first) else "rollouts"
    if source == "dataset":
        records = load_records(args.dataset_name, args.split, args.data_file, args.dataset_path)
        pairs, ties = dataset_pairs(records, spec, tokenizer)
    else:
        path = features_path(args.output_dir, m, args.dataset_name, "response", args.split)
        records = load_response_records(path, "get_activations_only.py --num_samples 2")
        rewards = load_tensors(features_path(args.output_dir, m, args.dataset_name, "labels", args.split),
                               "reward_label.py").tolist()
        pairs, ties = rollout_pairs(records, rewards, stage1_num_samples(path, records))
    pairs = [p for p in pairs if len(tokenizer(p["prompt"], add_special_tokens=False)["input_ids"])
             <= args.max_prompt_tokens]
    if args.limit:
        pairs = pairs[:args.limit]
    if not pairs:
        raise UsageError(f"no preference pairs ({ties} prompts tied); label more varied responses (more prompts or "
                         f"--num_samples in stage 1)")
    return pairs, ties, source


def bos_prefix(tokenizer, spec):
    """TRL's DPO tokenizes without special tokens; stage 1 adds them in the paper's plain format (a BOS for Llama
    tokenizers), so the prompt text gets the BOS written out to match."""
    if spec.chat_template or not tokenizer.bos_token:
        return ""
    ids = tokenizer("x")["input_ids"]
    return tokenizer.bos_token if ids and ids[0] == tokenizer.bos_token_id else ""


# ----------------------------------------------------------------------------------------------------------------------
# The trainers

def reward_function(reward_model):
    """The reward model as TRL's online trainers call it: the answer cut at the next turn marker, scored against the
    prompt's conversation, exactly as stages 2 and 5 score."""
    def reward(prompts, completions, conversation, **_):
        del prompts
        return reward_model.score(conversation, [cut_at_next_turn(c) for c in completions], progress=False)
    reward.__name__ = reward_model.name.replace("/", "_")
    return reward


def lora_config(args):
    from peft import LoraConfig
    return LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                      target_modules=args.target_modules if args.target_modules == "all-linear"
                      else [t.strip() for t in args.target_modules.split(",") if t.strip()],
                      task_type="CAUSAL_LM")


def common_config(args, work_dir, device):
    return dict(output_dir=work_dir, learning_rate=args.learning_rate, beta=args.beta,
                max_steps=args.max_steps if args.max_steps else -1, num_train_epochs=1, logging_steps=1,
                save_strategy="no", report_to="none", seed=args.seed, data_seed=args.seed, use_cpu=device.type == "cpu",
                lr_scheduler_type="constant", warmup_steps=0, gradient_accumulation_steps=1,
                gradient_checkpointing=args.gradient_checkpointing)


def build_trainer(args, model, tokenizer, spec, work_dir, device):
    """TRL's trainer for --method, and what it trains on."""
    from datasets import Dataset
    if args.method == "dpo":
        from trl import DPOConfig, DPOTrainer
        pairs, ties, source = preference_data(args, spec, tokenizer)
        bos = bos_prefix(tokenizer, spec)
        data = Dataset.from_list([{"prompt": bos + p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]}
                                  for p in pairs])
        config = DPOConfig(**common_config(args, work_dir, device), per_device_train_batch_size=args.batch_size,
                           max_length=args.max_prompt_tokens + args.max_new_tokens)
        trainer = DPOTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer,
                             peft_config=lora_config(args))
        return trainer, dict(pairs=len(pairs), tied_prompts=ties, pairs_from=source)
    from trl import RLOOConfig, RLOOTrainer
    prompts = load_prompts(args, args.split, spec, tokenizer)
    data = Dataset.from_list([{"prompt": p["prompt"], "conversation": p["conversation"]} for p in prompts])
    reward_model = load_reward_model(args.reward_model, args.device, "auto", args.reward_batch_size,
                                     args.trust_remote_code)
    config = RLOOConfig(**common_config(args, work_dir, device),
                        per_device_train_batch_size=args.batch_size * args.num_generations,
                        num_generations=args.num_generations, max_completion_length=args.max_new_tokens,
                        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    trainer = RLOOTrainer(model=model, reward_funcs=reward_function(reward_model), args=config, train_dataset=data,
                          processing_class=tokenizer, peft_config=lora_config(args))
    return trainer, dict(prompts=len(prompts), reward_model=args.reward_model)


# ----------------------------------------------------------------------------------------------------------------------
# Outputs

def plot_training(log, method, path):
    """Training loss and reward against the step: DPO's implicit reward margin (chosen minus rejected), RLOO's
    mean reward of its samples."""
    reward_key = "rewards/margins" if method == "dpo" else "reward"
    rows = [r for r in log if "loss" in r]
    fig, (left, right) = new_figure(ncols=2, figsize=(9, 3.6))
    left.plot([r["step"] for r in rows], [r["loss"] for r in rows])
    left.set_xlabel("step")
    left.set_ylabel("training loss")
    right.plot([r["step"] for r in rows if reward_key in r], [r[reward_key] for r in rows if reward_key in r])
    right.set_xlabel("step")
    right.set_ylabel("implicit reward margin (chosen - rejected)" if method == "dpo" else "mean reward of samples")
    fig.suptitle(f"LoRA {METHODS[method]} training")
    save_figure(fig, path)


def write_log(log, path):
    save_csv(log, path, sorted({k for r in log for k in r}, key=lambda k: (k != "step", k)))


def run_finetune_baseline(args, model=None, tokenizer=None):
    """LoRA DPO or RLOO on parsed flags; returns the adapter folder. A model passed in is trained through peft and
    left as it was (its LoRA layers are unloaded after the adapter is saved)."""
    start = time.time()
    if args.method == "ppo":
        import trl
        raise UsageError(f"TRL {trl.__version__} has no PPOTrainer: use --method rloo, TRL's online trainer that "
                         f"scores its samples with the reward model as a function (VADER included)")
    args = dataclasses.replace(args, beta=DEFAULT_BETA[args.method] if args.beta is None else args.beta)
    m = model_tag(args.model_name)
    folder = args.adapter_dir or adapter_path(args.output_dir, m, args.dataset_name, args.method)
    meta_path = adapter_meta_path(folder)
    settings = run_settings(args, ignore=("adapter_dir",))
    refuse_overwrite(folder, settings, args.overwrite, description=meta_path)
    if os.path.exists(os.path.join(folder, "adapter_config.json")) and not args.overwrite:
        print(f"{folder}: already trained with these settings (skipped)")
        return folder
    # ------------------------------------------------------------------------------------------------------ load
    import peft
    import trl
    device = resolve_device(args.device)
    spec = resolve_model(args.model_name, args.chat_template)
    tokenizer = tokenizer or load_policy_tokenizer(spec, args.trust_remote_code)
    if model is None:
        model, tokenizer = load_model_and_tokenizer(spec, "cpu", args.dtype, args.trust_remote_code,
                                                    tokenizer=tokenizer)
    work_dir = folder + ".work"
    shutil.rmtree(work_dir, ignore_errors=True)
    trainer, data = build_trainer(args, model, tokenizer, spec, work_dir, device)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in trainer.model.parameters())
    print(f"LoRA {METHODS[args.method]}: {trainable:,} trainable parameters of {total:,}; "
          + ", ".join(f"{k} {v}" for k, v in data.items()))
    # ------------------------------------------------------------------------------------------------------ train
    train_start = time.time()
    trainer.train()
    train_seconds = time.time() - train_start
    # ------------------------------------------------------------------------------------------------------ save
    log = [dict(r) for r in trainer.state.log_history]
    tmp = folder + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.model.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    shutil.rmtree(work_dir, ignore_errors=True)
    steps = [r for r in log if "loss" in r]
    save_json(describe_run(args, settings, method=args.method, method_name=METHODS[args.method],
                           train_seconds=round(train_seconds, 2), seconds=round(time.time() - start, 2),
                           **peak_memory_mb(), trainable_parameters=trainable, total_parameters=total,
                           steps=trainer.state.global_step, final_log=steps[-1] if steps else None,
                           trl=trl.__version__, peft=peft.__version__, device=str(device), **data),
              meta_path)
    write_log(log, folder + "_log.csv")
    plot_training(log, args.method, folder + "_training.png")
    trainer.model.unload()
    print(f"LoRA {METHODS[args.method]}: {trainer.state.global_step} steps in {train_seconds:.1f} s -> {folder} "
          f"(+ .meta.json, _log.csv, _training.png)")
    return folder
