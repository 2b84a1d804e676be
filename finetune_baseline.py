"""The fine-tuning baselines: LoRA DPO and LoRA RLOO (the online method), on TRL and peft, trained on the same
training prompts and scored by the same reward model as RE-Control's value model.

The embedded offline default (after stages 1-2 on the training split with --num_samples 2):
    python finetune_baseline.py --method dpo --model_name smollm2_135M --dataset_name demo --max_new_tokens 40
    python finetune_baseline.py --method rloo --model_name smollm2_135M --dataset_name demo --max_new_tokens 40 \\
        --reward_model vader
The paper's setting (GPU, hub access; HH-RLHF's own chosen/rejected pairs):
    python finetune_baseline.py --method dpo --model_name vicuna_7B --dataset_name hh_rlhf
    python finetune_baseline.py --method rloo --model_name vicuna_7B --dataset_name hh_rlhf \\
        --reward_model argsearch/llama-7b-rm-float32
Then the fine-tuned model is answered, scored and judged like any other (its name is added to the run names):
    python inference_intervention.py --adapter trained_model/smollm2_135M_demo_dpo_lora --use_intervention False
    python measure_reward.py --out_file smollm2_135M_demo_dpo_lora_base --baseline smollm2_135M_demo_base

DPO: the pairs are the best against the worst stage-1 response by the stage-2 reward, per training prompt (prompts
whose best and worst tie are skipped); for HH-RLHF and SHP (or a --data_file with chosen/rejected, or SHP's
human_ref_A/B and labels) the data set's own pairs (--pairs). RLOO: TRL's RLOOTrainer samples --num_generations
answers per prompt and scores them with --reward_model (VADER for the demo) as stages 2 and 5 do. The paper's PPO:
TRL 1.x has no PPOTrainer, so --method ppo says so and points here.

Writes trained_model/{m}_{d}_{method}_lora/ (the peft adapter), trained_model/{m}_{d}_{method}_lora.meta.json
(settings, wall time, peak memory, trainable parameters, TRL and peft versions), _log.csv (the trainer's log) and
_training.png (training loss and reward against the step).

Defaults (the paper's appendix hyper-parameters were not recovered): LoRA rank 16 and alpha 32 on every linear layer
(alpha = 2 r, the common choice; all linear layers as in QLoRA); learning rate 1e-4 with a constant schedule (TRL's
1e-6 default is for full fine-tuning: LoRA's B starts at zero and moves little at that rate in a few hundred steps);
beta 0.1 for DPO and a KL coefficient of 0.05 for RLOO (TRL's defaults); one pass over the training prompts
(--max_steps); 8 prompts per step; 2 samples per prompt for RLOO (the value model's data: 2 rollouts per prompt);
RLOO samples as stage 1 does (temperature 0.7, top-k 50, top-p 0.95).
"""
from utils import cli
from utils.stages.finetune import run_finetune_baseline


def parse_args(argv=None):
    parser = cli.make_parser(__doc__)
    parser.add_argument("--method", type=str, required=True, choices=["dpo", "rloo", "ppo"],
                        help="dpo: offline, on preference pairs; rloo: online, sampled answers scored by the reward "
                             "model (TRL's RLOOTrainer); ppo: not in TRL 1.x (refused, with the way to rloo)")
    group = parser.add_argument_group("model")
    group.add_argument("--model_name", type=str, default="smollm2_135M",
                       help="policy LLM to fine-tune: a paper name, smollm2_135M (embedded), a hub id or a folder")
    group.add_argument("--device", type=str, default="auto", help="'auto', 'cpu', 'cuda', 'cuda:N' or a GPU index")
    group.add_argument("--dtype", type=str, default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                       help="weights dtype; 'auto' = bfloat16 on GPU, float32 on CPU")
    group.add_argument("--trust_remote_code", type=cli.str2bool, default=False,
                       help="allow the model repository to run its own Python code")
    group.add_argument("--chat_template", type=cli.str2bool, default=None,
                       help="format prompts with the tokenizer's chat template (default: the model registry's "
                            "choice, as in stages 1 and 4)")
    cli.add_data_args(parser)
    group = parser.add_argument_group("training data")
    group.add_argument("--split", type=str, default="train",
                       help="the split trained on: the value model's training split")
    group.add_argument("--pairs", type=str, default="auto", choices=["auto", "rollouts", "dataset"],
                       help="dpo: 'rollouts' = best against worst stage-1 response per prompt by the stage-2 "
                            "reward; 'dataset' = the data set's own chosen/rejected (HH-RLHF) or A/B preference "
                            "(SHP); 'auto' = the data set's pairs when its records have them, else rollouts")
    group.add_argument("--max_prompt_tokens", type=cli.positive_int, default=512,
                       help="prompts longer than this many tokens are dropped (as in stage 1)")
    group = parser.add_argument_group("LoRA")
    group.add_argument("--lora_r", type=cli.positive_int, default=16, help="LoRA rank r")
    group.add_argument("--lora_alpha", type=cli.positive_float, default=32.0,
                       help="LoRA alpha (the update is scaled by alpha / r; 2 r is the usual choice)")
    group.add_argument("--lora_dropout", type=cli.unit_float, default=0.05, help="dropout on the LoRA input")
    group.add_argument("--target_modules", type=str, default="all-linear",
                       help="'all-linear' (every linear layer but lm_head) or comma-separated module names")
    group = parser.add_argument_group("training")
    group.add_argument("--learning_rate", type=cli.nonnegative_float, default=1e-4,
                       help="AdamW learning rate, constant (0 leaves the model as it was: a test uses it)")
    group.add_argument("--beta", type=cli.nonnegative_float, default=None,
                       help="strength of the pull toward the reference (the model before training): DPO's beta "
                            "(default 0.1) or RLOO's KL coefficient (default 0.05), TRL's defaults")
    group.add_argument("--max_steps", type=cli.positive_int, default=None,
                       help="optimizer steps (default: one pass over the training pairs or prompts)")
    group.add_argument("--batch_size", type=cli.positive_int, default=8,
                       help="prompts per optimizer step (DPO: pairs; RLOO: prompts, each with --num_generations "
                            "samples)")
    group.add_argument("--num_generations", type=cli.positive_int, default=2,
                       help="rloo: samples per prompt (>= 2: each is judged against the mean of the others)")
    group.add_argument("--max_new_tokens", type=cli.positive_int, default=128,
                       help="rloo: tokens per sampled answer; dpo: answers are cut at this length (use stage 1's)")
    group.add_argument("--temperature", type=cli.positive_float, default=0.7, help="rloo: sampling temperature")
    group.add_argument("--top_k", type=cli.positive_int, default=50, help="rloo: sampling top-k")
    group.add_argument("--top_p", type=cli.positive_float, default=0.95, help="rloo: sampling nucleus top-p")
    group.add_argument("--reward_model", type=str, default="vader",
                       help="rloo: 'vader', openbmb/UltraRM-13b or a sequence-classification reward model (the "
                            "one stage 2 labelled with)")
    group.add_argument("--reward_batch_size", type=cli.positive_int, default=32, help="rloo: texts per reward batch")
    group.add_argument("--gradient_checkpointing", type=cli.str2bool, default=False,
                       help="recompute activations in the backward pass: less memory, more time (on for 7B models on "
                            "one GPU; TRL turns it on by default, off here for the small CPU demo)")
    group.add_argument("--seed", type=int, default=0, help="random seed (LoRA initialisation, shuffling, sampling)")
    group.add_argument("--num_threads", type=cli.positive_int, default=None, help="torch CPU threads")
    group.add_argument("--adapter_dir", type=str, default=None,
                       help="save the adapter in this folder instead of trained_model/{m}_{d}_{method}_lora")
    cli.add_output_args(parser)
    args = parser.parse_args(argv)
    if args.method == "rloo" and args.num_generations < 2:
        parser.error("--num_generations must be >= 2 for rloo (the leave-one-out baseline needs another sample)")
    return args


def main(argv=None):
    args = parse_args(argv)
    cli.setup(args)
    run_finetune_baseline(args)


if __name__ == "__main__":
    cli.main_guard(main)
