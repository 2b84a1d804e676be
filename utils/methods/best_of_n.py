"""Best-of-N: sample N responses per prompt, keep the one the reward model scores highest (HF or vLLM)."""
import contextlib
from dataclasses import dataclass

import torch

from utils.config import option, positive_float, positive_int
from utils.decoding import DecodingMethod, register
from utils.engines import Sampling
from utils.generation import decode_rows, generate_batch, generation_config
from utils.metrics import cut_at_next_turn


@dataclass(frozen=True)
class SampledCandidates:
    """The options of the methods that sample candidates (Best-of-N, CD prefix); sampling uses top-k 50."""
    num_candidates: int = option(4, "best_of_n: N sampled responses; cd_prefix: K sampled blocks", parse=positive_int)
    temperature: float = option(0.7, "sampling temperature", parse=positive_float)
    top_p: float = option(0.95, "sampling nucleus top-p", parse=positive_float)


def best_of_n(model, tokenizer, prompts, conversations, reward_model, num_candidates, temperature=0.7, top_p=0.95,
              top_k=50, max_new_tokens=128, add_special_tokens=True):
    config = generation_config(model, tokenizer, max_new_tokens, do_sample=True, temperature=temperature,
                               top_k=top_k, top_p=top_p, num_return_sequences=num_candidates)
    responses, results = decode_rows(tokenizer, *generate_batch(model, tokenizer, prompts, config, add_special_tokens))
    return keep_best(responses, results, conversations, reward_model, num_candidates)


def keep_best(responses, results, conversations, reward_model, num_candidates):
    """Of each prompt's num_candidates responses (in a row), the one the reward model scores highest."""
    scores = reward_model.score([c for c in conversations for _ in range(num_candidates)],
                                [cut_at_next_turn(r) for r in results], progress=False)
    best = torch.tensor(scores).view(len(conversations), num_candidates).argmax(1)
    chosen = [i * num_candidates + int(b) for i, b in enumerate(best)]
    return [responses[i] for i in chosen], [results[i] for i in chosen]




class BestOfN(DecodingMethod):
    name, label, Options = "best_of_n", "Best-of-N", SampledCandidates
    uses_reward_model = True

    def run_part(self, options, _value_tag):
        return f"best_of_n_{options.num_candidates}"

    @contextlib.contextmanager
    def session(self, resources, options):
        engine, reward_model = resources.engine, resources.reward_model()
        sampling = Sampling(temperature=options.temperature, top_k=50, top_p=options.top_p)

        def decode_batch(texts, conversations):
            candidates = engine.decode(texts, resources.max_new_tokens, sampling, options.num_candidates)
            return keep_best(*candidates, conversations, reward_model, options.num_candidates)
        yield decode_batch


register(BestOfN())
