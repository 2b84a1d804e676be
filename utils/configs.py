"""The stages' options, one frozen dataclass each (utils.config.option: type, default and help written once).

The scripts build their parsers from these classes; `run_*(config, ...)` takes one and never changes it. Shared
groups of options (the policy, the data, generation, the engine, the outputs, the reward model, the value model a
stage reads) are mixins, so a default shared by several scripts has one source.
"""
from dataclasses import dataclass, fields
from typing import Optional

from utils.config import (
    nonnegative_float,
    nonnegative_int,
    option,
    positive_float,
    positive_int,
    redefault,
    unit_float,
)
from utils.metrics import SIMCSE_MODEL
from utils.paper import VALUE_LR, default_shape

DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICE_HELP = ("'auto' (cuda if available, else cpu), 'cpu', 'cuda', 'cuda:N' or a bare GPU index as in the original "
               "scripts")


# ----------------------------------------------------------------------------------------------------------------------
# Shared groups

@dataclass(frozen=True)
class OutputOptions:
    output_dir: str = option(".", "root folder under which features/, trained_model/, response/ ... are read and "
                                  "written")
    overwrite: bool = option(False, "replace outputs that a run with other settings wrote (and discard its "
                                    "unfinished batches); without it such a run is refused")


@dataclass(frozen=True)
class ModelOptions:
    model_name: str = option("smollm2_135M", "policy LLM: a paper name (vicuna_7B, falcon_7B, llama3_8B), the "
                             "embedded default smollm2_135M, a hub id or a local model folder", group="model")
    device: str = option("auto", DEVICE_HELP, group="model")
    dtype: str = option("auto", "weights dtype; 'auto' = bfloat16 on GPU, float32 on CPU", choices=DTYPES,
                        group="model")
    trust_remote_code: bool = option(False, "allow the model repository to run its own Python code (off unless you "
                                            "trust it)", group="model")
    device_map: Optional[str] = option(None, "'auto' spreads a model too large for one GPU over all visible GPUs "
                                       "(and CPU) with accelerate; overrides --device. Do not combine with accelerate "
                                       "launch", group="model")
    chat_template: Optional[bool] = option(None, "format prompts with the tokenizer's chat template instead of the "
                                           "paper's 'User: ...\\nAssistant:' text (default: the model registry's "
                                           "choice)", group="model")
    adapter: Optional[str] = option(None, "a LoRA adapter folder (finetune_baseline.py, peft) merged into the "
                                    "policy's weights: the fine-tuned model; its name is added after the data set "
                                    "name in every output name", group="model")


@dataclass(frozen=True)
class DataOptions:
    dataset_name: str = option("demo", "hh_rlhf, shp, harmfulqa (loaded with datasets.load_dataset; harmfulqa is a "
                               "test set whose one split answers every split name), demo, demo_polar or demo_ood "
                               "(shipped in dataset/)", group="data")
    data_file: Optional[str] = option(None, "local JSON or JSON-lines file to read prompts from instead of the named "
                                      "data set (HH-RLHF 'chosen' dialogues, SHP 'history', or 'prompt'/'question' "
                                      "fields)", group="data")
    dataset_path: Optional[str] = option(None, "hub id or local folder passed to datasets.load_dataset instead of "
                                         "the data set's default hub id (e.g. a local copy of Anthropic/hh-rlhf)",
                                         group="data")
    limit: Optional[int] = option(None, "use only the first N prompts of each split (quick runs)", parse=positive_int,
                                  group="data")


@dataclass(frozen=True)
class GenerationOptions:
    batch_size: int = option(32, "prompts per forward batch", parse=positive_int, group="generation")
    max_new_tokens: int = option(128, "maximum number of generated tokens per response", parse=positive_int,
                                 group="generation")
    max_prompt_tokens: int = option(512, "prompts longer than this many tokens are dropped (as in the paper)",
                                    parse=positive_int, group="generation")
    seed: int = option(0, "random seed (sampling, shuffling)", group="generation")
    num_threads: Optional[int] = option(None, "torch CPU threads (default: torch's choice)", parse=positive_int,
                                        group="generation")


@dataclass(frozen=True)
class EngineOptions:
    engine: str = option("hf", "generation engine: 'hf' (transformers' generate, the reference) or 'vllm' (faster; "
                         "the same edit inside vLLM's runner; needs `bash scripts/setup.sh --vllm`)",
                         choices=("hf", "vllm"), group="engine")
    tensor_parallel_size: int = option(1, "vllm: GPUs that split each layer (vLLM's tensor parallelism)",
                                       parse=positive_int, group="engine")
    pipeline_parallel_size: int = option(1, "vllm: GPUs (or nodes, through Ray) that split the layers into stages",
                                         parse=positive_int, group="engine")
    data_parallel_size: int = option(1, "vllm: engine replicas that share the prompts", parse=positive_int,
                                     group="engine")
    gpu_memory_utilization: Optional[float] = option(None, "vllm: fraction of each GPU's memory vLLM may take "
                                                     "(weights + KV cache); default 0.9 on GPU, and on CPU (where it "
                                                     "is a share of the machine's RAM) half of what is free",
                                                     parse=unit_float, group="engine")


@dataclass(frozen=True)
class PolicyOptions(OutputOptions, EngineOptions, GenerationOptions, DataOptions, ModelOptions):
    """Every stage that generates with the policy LLM (fields in the order model, data, generation, engine, output)."""


@dataclass(frozen=True)
class ValueModelChoice:
    """Which value model a stage reads: one default for every script, so the same flags pick the same file."""
    value_lr: float = option(VALUE_LR, "learning rate the value model was trained with (stage 3's --lr): "
                             "picks trained_model/value_model_{m}_{d}_{value_lr}[_variant] and names the output "
                             "(several variants: pass --value_model)", parse=positive_float, group="value model")
    value_model: Optional[str] = option(None, "path of a value model (without extension) to use instead of the one "
                                        "--value_lr picks; its file name then names the runs", group="value model")


@dataclass(frozen=True)
class RewardModelOptions:
    reward_model: str = option("vader", "'vader' (embedded: VADER sentiment of the answer; 'vader_polar' for "
                               "demo_polar: times the sign the prompt asks for), openbmb/UltraRM-13b, or "
                               "any sequence-classification reward model (hub id or folder), e.g. "
                               "argsearch/llama-7b-rm-float32", group="reward model")


@dataclass(frozen=True)
class RewardStageOptions(OutputOptions, RewardModelOptions):
    """Every stage that scores texts with a reward model (stages 2 and 5)."""
    batch_size: int = option(32, "texts per reward-model batch", parse=positive_int, group="reward model")
    device: str = option("auto", "'auto', 'cpu', 'cuda', 'cuda:N' or a GPU index", group="reward model")
    dtype: str = option("auto", "reward-model dtype; 'auto' = bfloat16 on GPU, float32 on CPU", choices=DTYPES,
                        group="reward model")
    trust_remote_code: bool = option(False, "allow the reward model's repository to run its own code",
                                     group="reward model")
    seed: int = option(0, "random seed", group="reward model")


ADAPTER_OF_STAGE_1 = ("the LoRA adapter folder stage 1 ran with (--adapter there): names the files as stage 1 did "
                      "({m}_{d}_{adapter tag}_...)")


# ----------------------------------------------------------------------------------------------------------------------
# Stage configs

@dataclass(frozen=True)
class ActivationsConfig(PolicyOptions):
    """Stage 1 (get_activations_only.py)."""
    num_samples: int = option(1, "responses per prompt: 1 = greedy; K > 1 = K sampled responses", parse=positive_int)
    temperature: float = option(0.7, "sampling temperature", parse=positive_float)
    top_k: int = option(50, "sampling top-k", parse=positive_int)
    top_p: float = option(0.95, "sampling nucleus top-p", parse=positive_float)
    splits: str = option("train,test", "comma-separated splits to process")
    feature_dtype: str = option("float16", "dtype the features are stored in",
                                choices=("float16", "bfloat16", "float32"))


@dataclass(frozen=True)
class RewardLabelConfig(RewardStageOptions):
    """Stage 2 (reward_label.py)."""
    model_name: str = option("smollm2_135M", "the policy LLM whose stage-1 responses are scored (names the files)")
    dataset_name: str = option("demo", "data set name used in stage 1")
    mode: str = option("train", "which split to label: train, test, or any other split stage 1 wrote (e.g. tune)")
    adapter: Optional[str] = option(None, ADAPTER_OF_STAGE_1)


@dataclass(frozen=True)
class ValueModelConfig(OutputOptions):
    """Stage 3 (train_value_model.py); the training settings are utils.training.ValueTrainingConfig's."""
    model_name: str = option("smollm2_135M", "the LLM whose features are used")
    dataset_name: str = option("demo", "data set name used in stages 1-2")
    adapter: Optional[str] = option(None, ADAPTER_OF_STAGE_1)
    lr: float = option(VALUE_LR, "Adam learning rate (names the file)", parse=positive_float)
    epochs: int = option(100, "training epochs", parse=positive_int)
    batch_size: int = option(512, "sequences per batch", parse=positive_int)
    num_layers: Optional[int] = option(None, "Linear layers of the MLP (default: the paper's, 3 for vicuna_7B on "
                                       "hh_rlhf, else 2)", parse=int, choices=(2, 3))
    hidden_dim: Optional[int] = option(None, "MLP width (default: the paper's 4096 for its LLMs, else the LLM's "
                                       "hidden size)", parse=positive_int)
    weight_decay: float = option(0.0, "Adam weight decay", parse=nonnegative_float)
    detach_target: bool = option(True, "stop the gradient through V(o_{t+1}) (False = the original training loss)")
    td_lambda: float = option(0.0, "value target: 0 = the paper's TD(0) (V(o_t) -> V(o_{t+1})); 1 = every valid step "
                              "regressed on the final reward (Monte Carlo); between: the undiscounted lambda-return",
                              parse=unit_float)
    val_fraction: float = option(0.0, "fraction of the training PROMPTS (all their responses) held out as a "
                                 "validation slice; its Monte-Carlo error is logged every epoch", parse=unit_float)
    early_stopping: bool = option(False, "keep the epoch with the lowest validation Monte-Carlo error (needs "
                                  "--val_fraction > 0) instead of the last one")
    standardize_rewards: bool = option(False, "train on standardised rewards (train mean 0, std 1); the saved model "
                                       "is folded back to reward units, so step sizes keep their meaning")
    margin_weight: float = option(0.0, "weight of Pref-CTRL's preference-margin loss, added to the regression: on "
                                  "each training prompt's best and worst responses, relu(--margin - (mean V of the "
                                  "best - mean V of the worst)); 0 = the paper's loss alone", parse=nonnegative_float)
    margin: float = option(0.1, "the margin of --margin_weight's loss, in reward units", parse=nonnegative_float)
    rounds: int = option(1, "1 = the paper (one value model, on the stage-1 rollouts of the unedited policy); R > 1 "
                         "adds R - 1 on-policy refits: round r regenerates stage 1's rollouts (its settings, from its "
                         ".meta.json) with round r-1's edit on, relabels them with stage 2's reward model and trains "
                         "a new value model on them (value_model_..._r{r}, its lineage in its .json)",
                         parse=positive_int)
    refit_step_size: Optional[float] = option(None, "the refits' rollouts: the edit's step size alpha (needed with "
                                              "--rounds > 1; e.g. the setting sweep.py chose for round 1)",
                                              parse=positive_float)
    refit_num_updates: Optional[int] = option(None, "the refits' rollouts: the edit's number of updates n (needed "
                                              "with --rounds > 1)", parse=positive_int)
    refit_engine: str = option("auto", "the refits' rollouts: 'auto' = vLLM where installed, else HF; 'hf'; 'vllm'",
                               choices=("auto", "hf", "vllm"))
    eval_split: str = option("auto", "split whose loss is reported every epoch (never used for a choice): 'auto' = "
                             "the tuning split where the data set has one (demo: stage 1 on --splits tune first), "
                             "else test")
    value_model: Optional[str] = option(None, "save the value model under this path (no extension) instead of "
                                        "trained_model/value_model_{m}_{d}_{lr}[_variant]")
    checkpoint_every: int = option(10, "save a checkpoint every N epochs", parse=positive_int)
    device: str = option("auto", "'auto', 'cpu', 'cuda', 'cuda:N' or a GPU index")
    seed: int = option(0, "random seed (initialisation, shuffling)")
    num_threads: Optional[int] = option(None, "torch CPU threads", parse=positive_int)

    def __post_init__(self):
        if self.early_stopping and not self.val_fraction:
            raise ValueError("--early_stopping True needs a validation slice: pass --val_fraction (e.g. 0.1)")
        refit_edit = (self.refit_step_size, self.refit_num_updates)
        if self.rounds > 1 and None in refit_edit:
            raise ValueError(f"--rounds {self.rounds} regenerates rollouts with the edit on: pass --refit_step_size "
                             f"and --refit_num_updates (e.g. the alpha and n sweep.py chose for round 1)")
        if self.rounds == 1 and refit_edit != (None, None):
            raise ValueError("--refit_step_size and --refit_num_updates set the refits' edit: pass --rounds 2 or more")
        if self.rounds > 1 and self.value_model:
            raise ValueError("--value_model names one file; --rounds > 1 writes one per round under trained_model/ "
                             "(drop --value_model)")


@dataclass(frozen=True)
class DecodeConfig(RewardModelOptions, ValueModelChoice, PolicyOptions):
    """Stage 4 for any registered decoding method (decode_methods.py); each method's own options
    (utils.decoding.DecodingMethod.Options) are parsed beside these."""
    batch_size: int = redefault(GenerationOptions, "batch_size", 16)
    method: str = option("base", "the decoding method (utils.decoding registry)")
    split: str = option("test", "data split to answer; the run's file name does not say which (its .meta.json "
                        "does), so answer another split into its own --output_dir; sweep.py names its cells "
                        "{m}_{d}_{split}_...")
    prompting: bool = option(False, "prepend the paper's alignment prompt ('+ Prompting')")
    settings_from: Optional[str] = option(None, "a sweep result (results/{m}_{d}_sweep*.json from sweep.py): take "
                                          "the method's tuned options from the cell it chose on its tuning split")
    allow_other_value_model: bool = option(False, "with --settings_from: use a setting chosen for another value "
                                           "model than the one this run reads (refused otherwise; the run's record "
                                           "and the table then say so)")
    use_cache: bool = option(True, "use the KV cache while generating")


@dataclass(frozen=True)
class ServeConfig(EngineOptions, ModelOptions):
    """serve.py: vLLM's OpenAI-compatible server with RE-Control chosen per request (vLLM's own flags pass through).
    --device, --device_map, --adapter, --engine and --data_parallel_size are not its flags (see SERVE_EXCLUDED)."""
    value_model: Optional[tuple] = option(
        None, "NAME=PATH: a value model (path without extension) that requests may name as vllm_xargs.value_model; "
        "repeat the flag for several. Each is checked against the served LLM (hidden size, the LLM it was trained "
        "on)", repeat=True, parse=str, group="serving")
    settings_from: Optional[tuple] = option(
        None, "NAME=SWEEP.json: value model NAME's default step size and number of updates from a sweep chosen for it "
        "(sweep.py); without it, the paper's setting for the LLM and data set it was trained on, if known (repeat "
        "the flag)", repeat=True, parse=str, group="serving")
    max_num_updates: int = option(200, "the largest number of updates n a request may ask for (the paper's largest "
                                  "is 200): caps the compute one request can buy", parse=nonnegative_int,
                                  group="serving")
    seed: int = option(0, "vLLM's seed (sampled requests without a seed of their own)", group="serving")


SERVE_EXCLUDED = ("device", "device_map", "adapter", "engine", "data_parallel_size")


@dataclass(frozen=True)
class MeasureRewardConfig(RewardStageOptions):
    """Stage 5 (measure_reward.py)."""
    out_file: str = option(None, "run name: scores response/{out_file}.json", required=True)
    model_name: str = option("smollm2_135M", "the policy LLM (for the record)", record_only=True)
    dataset_name: str = option("demo", "data set name (for the record)", record_only=True)
    baseline: Optional[str] = option(None, "run name of a baseline already scored here: also report the paired "
                                     "difference")
    heldout_reward_model: str = option("auto", "a second scorer, reported beside the reward, that no stage trains on "
                                       "and no choice is made by (a check for reward hacking): 'textblob', any "
                                       "--reward_model value, 'none', or 'auto' = textblob beside vader, "
                                       "textblob_polar beside vader_polar, else none")


@dataclass(frozen=True)
class MetricsConfig(OutputOptions):
    """Stage 6 (metrics.py)."""
    run_name: str = option(None, "run name: evaluates response/{run_name}.json", required=True)
    embedding_model: str = option(SIMCSE_MODEL, "sentence encoder for coherence, read through simcse.SimCSE: a hub "
                                  "id, a folder, or 'minilm' (the all-MiniLM-L6-v2 folder from PyPI, offline)")
    device: str = option("cpu", "device of the sentence encoder")
    batch_size: int = option(64, "texts per encoder batch", parse=positive_int)


@dataclass(frozen=True)
class JudgeConfig(OutputOptions):
    """Stage 7 (gpt4_eval.py)."""
    run_name_red: str = option(None, "the run judged: response/{red}.json", required=True)
    run_name_blue: str = option(None, "the reference: another run's name (response/{blue}.json), or a file of "
                                "preferred responses [{\"prefer\": text}, ...] aligned with red's prompts (.json "
                                "optional)", required=True)
    judge_model: str = option("gpt-4", "judge model (Azure: the deployment name)")
    base_url: Optional[str] = option(None, "OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (default: "
                                     "OpenAI, or Azure when AZURE_OPENAI_ENDPOINT is set)")
    num_samples: int = option(100, "prompts judged, drawn from --seed (the paper's HH protocol uses 300)",
                              parse=positive_int)
    seed: int = option(0, "seed of the prompt sample and of the answer order")
    max_retries: int = option(4, "retries of a failed or unparsable judgment before it is recorded as an error",
                              parse=nonnegative_int)
    retry_delay: float = option(2.0, "seconds before the first retry; doubled at each further retry",
                                parse=nonnegative_float)
    timeout: float = option(120.0, "seconds per judge request", parse=positive_float)
    max_tokens: int = option(512, "length limit of a judgment", parse=positive_int)


@dataclass(frozen=True)
class FinetuneConfig(OutputOptions, DataOptions):
    """The fine-tuning baselines (finetune_baseline.py): LoRA DPO and RLOO on TRL's trainers."""
    method: str = option(None, "dpo: offline, on preference pairs; rloo: online, sampled answers scored by the reward "
                         "model (TRL's RLOOTrainer); ppo: not in TRL 1.x (refused, with the way to rloo)",
                         choices=("dpo", "rloo", "ppo"), required=True)
    model_name: str = option("smollm2_135M", "policy LLM to fine-tune: a paper name, smollm2_135M (embedded), a hub "
                             "id or a folder", group="model")
    device: str = option("auto", "'auto', 'cpu', 'cuda', 'cuda:N' or a GPU index", group="model")
    dtype: str = option("auto", "weights dtype; 'auto' = bfloat16 on GPU, float32 on CPU", choices=DTYPES,
                        group="model")
    trust_remote_code: bool = option(False, "allow the model repository to run its own Python code", group="model")
    chat_template: Optional[bool] = option(None, "format prompts with the tokenizer's chat template (default: the "
                                           "model registry's choice, as in stages 1 and 4)", group="model")
    split: str = option("train", "the split trained on: the value model's training split", group="training data")
    pairs: str = option("auto", "dpo: 'rollouts' = best against worst stage-1 response per prompt by the stage-2 "
                        "reward; 'dataset' = the data set's own chosen/rejected (HH-RLHF) or A/B preference (SHP); "
                        "'auto' = the data set's pairs when its records have them, else rollouts",
                        choices=("auto", "rollouts", "dataset"), group="training data")
    max_prompt_tokens: int = option(512, "prompts longer than this many tokens are dropped (as in stage 1)",
                                    parse=positive_int, group="training data")
    lora_r: int = option(16, "LoRA rank r", parse=positive_int, group="LoRA")
    lora_alpha: float = option(32.0, "LoRA alpha (the update is scaled by alpha / r; 2 r is the usual choice)",
                               parse=positive_float, group="LoRA")
    lora_dropout: float = option(0.05, "dropout on the LoRA input", parse=unit_float, group="LoRA")
    target_modules: str = option("all-linear", "'all-linear' (every linear layer but lm_head) or comma-separated "
                                 "module names", group="LoRA")
    learning_rate: float = option(1e-4, "AdamW learning rate, constant (0 leaves the model as it was: a test uses "
                                  "it)", parse=nonnegative_float, group="training")
    beta: Optional[float] = option(None, "strength of the pull toward the reference (the model before training): "
                                   "DPO's beta (default 0.1) or RLOO's KL coefficient (default 0.05), TRL's "
                                   "defaults", parse=nonnegative_float, group="training")
    max_steps: Optional[int] = option(None, "optimizer steps (default: one pass over the training pairs or "
                                      "prompts)", parse=positive_int, group="training")
    batch_size: int = option(8, "prompts per optimizer step (DPO: pairs; RLOO: prompts, each with --num_generations "
                             "samples)", parse=positive_int, group="training")
    num_generations: int = option(2, "rloo: samples per prompt (>= 2: each is judged against the mean of the "
                                  "others)", parse=positive_int, group="training")
    max_new_tokens: int = option(128, "rloo: tokens per sampled answer; dpo: answers are cut at this length (use "
                                 "stage 1's)", parse=positive_int, group="training")
    temperature: float = option(0.7, "rloo: sampling temperature", parse=positive_float, group="training")
    top_k: int = option(50, "rloo: sampling top-k", parse=positive_int, group="training")
    top_p: float = option(0.95, "rloo: sampling nucleus top-p", parse=positive_float, group="training")
    reward_model: str = option("vader", "rloo: 'vader', openbmb/UltraRM-13b or a sequence-classification reward "
                               "model (the one stage 2 labelled with)", group="training")
    reward_batch_size: int = option(32, "rloo: texts per reward batch", parse=positive_int, group="training")
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass: less memory, more "
                                          "time (on for 7B models on one GPU; TRL turns it on by default, off here "
                                          "for the small CPU demo)", group="training")
    seed: int = option(0, "random seed (LoRA initialisation, shuffling, sampling)", group="training")
    num_threads: Optional[int] = option(None, "torch CPU threads", parse=positive_int, group="training")
    adapter_dir: Optional[str] = option(None, "save the adapter in this folder instead of "
                                        "trained_model/{m}_{d}_{method}_lora", group="training")

    def __post_init__(self):
        if self.method == "rloo" and self.num_generations < 2:
            raise ValueError("--num_generations must be >= 2 for rloo (the leave-one-out baseline needs another "
                             "sample)")


@dataclass(frozen=True)
class TableConfig:
    """The results table (make_table.py) and the HTML report (report_html.py)."""
    model_name: str = option("smollm2_135M", "the policy LLM of the runs")
    dataset_name: str = option("demo", "the data set of the runs")
    base: Optional[str] = option(None, "base run name (default: {m}_{d}_base)")
    output_dir: str = option(".", "the run folder (as in the stage scripts)")


@dataclass
class ValueTrainingConfig:
    """Stage 3's settings; each default is the paper's (TD(0), the last epoch kept, raw rewards)."""
    lr: float = VALUE_LR              # Adam learning rate
    epochs: int = 100
    batch_size: int = 512             # sequences per batch
    num_layers: int = 2               # Linear layers of the MLP
    hidden_dim: Optional[int] = None  # default: the states' size
    weight_decay: float = 0.0
    detach_target: bool = True        # False: the original's gradient through V(o_{t+1})
    td_lambda: float = 0.0            # 0: TD(0); 1: every step regressed on the final reward
    val_fraction: float = 0.0         # fraction of the training prompts held out
    early_stopping: bool = False      # keep the epoch with the lowest validation Monte-Carlo error
    standardize_rewards: bool = False  # train on (r - mean) / std, fold back to reward units
    margin_weight: float = 0.0        # Pref-CTRL's preference-margin loss beside the regression (0: the paper's)
    margin: float = 0.1               # the margin the best response's mean V should clear the worst's by
    seed: int = 0
    device: str = "cpu"


def stage3_defaults(model_name: str, dataset_name: str) -> dict:
    """The training settings of a value model that keeps the setting's plain (paper) file name."""
    defaults = {f.name: f.default for f in fields(ValueTrainingConfig)}
    defaults["num_layers"], defaults["hidden_dim"] = default_shape(model_name, dataset_name)
    defaults.update(rounds=1, refit_step_size=None, refit_num_updates=None)  # the paper: no refit
    return defaults
