"""RE-Control from Python, in one process: load a policy, record its states, train a value model, generate with
any decoding method. The stage scripts are the same steps with files in between.

    from utils import generate, load_policy, load_value_model, record_states, train_value_model
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

from utils.data import format_prompt
from utils.decoding import Resources, get_method, options_from
from utils.engines import HFEngine, Sampling
from utils.errors import UsageError
from utils.features import SequenceData
from utils.generation import decode_rows, generate_batch, generation_config
from utils.intervention import ActivationCapture
from utils.models import ModelSpec, load_model_and_tokenizer, resolve_model
from utils.runs import seed_batch
from utils.training import ValueTrainingConfig, fit_value_model, split_by_group
from utils.value_model import ValueModel


@dataclass
class Policy:
    """The policy LLM, its left-padding tokenizer, and how its prompts are written (spec.chat_template)."""
    model: torch.nn.Module
    tokenizer: object
    spec: ModelSpec

    @property
    def add_special_tokens(self) -> bool:
        return not self.spec.chat_template  # a chat template writes its own special tokens

    def format(self, questions: Sequence[str], system_prompt: Optional[str] = None) -> List[str]:
        """Single-turn questions in the policy's input format (the paper's 'User: ...' text or the chat template)."""
        return [format_prompt([("user", q)], self.spec, self.tokenizer, system_prompt) for q in questions]


def load_policy(model_name: str = "smollm2_135M", device: str = "auto", dtype: str = "auto",
                chat_template: Optional[bool] = None, trust_remote_code: bool = False,
                adapter: Optional[str] = None) -> Policy:
    """The policy LLM in eval mode: a paper name (vicuna_7B, falcon_7B, llama3_8B), the embedded smollm2_135M, a hub
    id or a local folder; `adapter`: a LoRA adapter folder (finetune_baseline.py) merged into its weights. A model
    already in memory: Policy(model, tokenizer, utils.models.resolve_model(name))."""
    spec = resolve_model(model_name, chat_template, adapter)
    model, tokenizer = load_model_and_tokenizer(spec, device, dtype, trust_remote_code)
    return Policy(model, tokenizer, spec)


@dataclass
class RecordedStates:
    """Stage 1 in memory: the valid steps' final-norm states back to back, and what they belong to."""
    rows: torch.Tensor      # [sum(lengths), d] float32: o_t of every valid step, response after response
    lengths: torch.Tensor   # [responses] valid steps per response
    prompts: List[str]      # the prompt of each response (K in a row per prompt with num_samples K)
    responses: List[str]    # the generations alone


@torch.no_grad()
def record_states(policy: Policy, prompts: Sequence[str], max_new_tokens: int = 128, num_samples: int = 1,
                  batch_size: int = 32, temperature: float = 0.7, top_k: int = 50, top_p: float = 0.95,
                  seed: int = 0) -> RecordedStates:
    """Generate (greedy, or num_samples sampled responses per prompt) and keep o_t of every valid step.

    Step 0 is the state after the prompt; a step is valid up to the one that chose eos. Each batch is seeded on its
    own (seed, batch index), as in stage 1.
    """
    model, tokenizer = policy.model, policy.tokenizer
    config = generation_config(model, tokenizer, max_new_tokens, do_sample=num_samples > 1, temperature=temperature,
                               top_k=top_k, top_p=top_p, num_return_sequences=num_samples)
    rows, lengths, owners, responses = [], [], [], []
    with ActivationCapture(model, dtype=torch.float32) as capture:
        for index, start in enumerate(range(0, len(prompts), batch_size)):
            batch = list(prompts[start:start + batch_size])
            seed_batch(seed, index)
            prompt_ids, tokens, mask = generate_batch(model, tokenizer, batch, config, policy.add_special_tokens)
            states = capture.pop()
            rows.append(states[mask.to(states.device)].cpu())
            lengths.append(mask.sum(1).cpu())
            owners += [p for p in batch for _ in range(num_samples)]
            responses += decode_rows(tokenizer, prompt_ids, tokens, mask)[1]
    return RecordedStates(torch.cat(rows), torch.cat(lengths), owners, responses)


def train_value_model(rows: torch.Tensor, lengths: torch.Tensor, rewards: Sequence[float],
                      config: Optional[ValueTrainingConfig] = None, groups: Optional[Sequence[str]] = None
                      ) -> ValueModel:
    """Stage 3 on tensors: a ValueModel trained on packed rows ([sum(lengths), d]), their lengths and one reward
    per sequence. groups (e.g. each sequence's prompt) are needed for config.val_fraction > 0."""
    config = config or ValueTrainingConfig()
    data = SequenceData(rows.float(), torch.as_tensor(lengths), torch.as_tensor(rewards, dtype=torch.float32))
    validation = None
    if config.val_fraction:
        if groups is None or len(groups) != len(data):
            raise UsageError("val_fraction needs groups: one prompt per sequence (RecordedStates.prompts)")
        data, validation = split_by_group(data, groups, config.val_fraction, config.seed)
    return fit_value_model(data, config, validation).model


def generate(policy: Policy, prompts: Sequence[str], method: str = "re_control", max_new_tokens: int = 128,
             value_model: Optional[ValueModel] = None, step_size: float = 0.5, num_updates: int = 30,
             direction: Optional[torch.Tensor] = None, strength: float = 4.0, reward_model=None,
             conversations: Optional[Sequence[str]] = None, num_candidates: int = 4, top_k: int = 10,
             weight: float = 1.0, block_size: int = 8, do_sample: bool = False, seed: int = 0,
             **options) -> Tuple[List[str], List[str]]:
    """(responses = prompt + generation, results = generation) for one batch of prompts, by any registered method
    (utils.decoding): base (plain decoding), re_control (value_model, step_size alpha, num_updates n), static_re
    (direction, strength), best_of_n (reward_model, num_candidates), args (reward_model, top_k, weight), cd_prefix
    (value_model, num_candidates, block_size), or one of your own (its options as keywords). Reward-based methods
    score `conversations` (default: the prompts) + answers.
    """
    chosen = get_method(method)
    if chosen.uses_value_model and value_model is None:
        raise UsageError(f"{method} needs a value_model (train_value_model, or load_value_model from a file)")
    if chosen.uses_reward_model and reward_model is None:
        raise UsageError(f"{method} needs a reward_model (load_reward_model)")
    if chosen.uses_probe and direction is None:
        raise UsageError(f"{method} needs a direction (e.g. utils.methods.linear_probe_direction)")
    given = dict(step_size=step_size, num_updates=num_updates, strength=strength, num_candidates=num_candidates,
                 top_k=top_k, weight=weight, block_size=block_size, **options)
    engine = HFEngine(policy.model, policy.tokenizer, policy.add_special_tokens)
    resources = Resources(engine=engine, max_new_tokens=max_new_tokens, sampling=Sampling() if do_sample else None,
                          loaded_value_model=value_model, loaded_reward_model=reward_model,
                          loaded_direction=direction)
    torch.manual_seed(seed)
    with chosen.session(resources, options_from(chosen, given)) as decode_batch:
        return decode_batch(list(prompts), list(conversations or prompts))
