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
from utils.configs import FinetuneConfig
from utils.stages.finetune import run_finetune_baseline


def build_parser():
    return cli.build_parser(__doc__, FinetuneConfig)


def parse_args(argv=None):
    return cli.parse_config(build_parser(), FinetuneConfig, argv)


def main(argv=None):
    args = parse_args(argv)
    cli.setup(args)
    run_finetune_baseline(args)


if __name__ == "__main__":
    cli.main_guard(main)
