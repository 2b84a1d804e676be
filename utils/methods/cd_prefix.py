"""Controlled decoding with a prefix scorer (Mudgal et al. 2023; the paper's "CD prefix"): block by block, the best
of K sampled blocks by the trained value model."""
import contextlib
from dataclasses import dataclass

import torch

from utils.config import option, positive_int
from utils.decoding import DecodingMethod, register
from utils.generation import decode_rows, eos_ids, generation_config, valid_steps
from utils.intervention import ActivationCapture
from utils.methods.best_of_n import SampledCandidates
from utils.value_model import value_and_gradient


@torch.no_grad()
def cd_prefix_decode(model, tokenizer, prompts, value_model, num_candidates=4, block_size=8, max_new_tokens=128,
                     temperature=0.7, top_k=50, top_p=0.95, add_special_tokens=True):
    """Each block: K continuations of block_size tokens; keep the one whose last state the value model rates
    highest. The prompt text grows by the kept block until max_new_tokens or eos."""
    eos = eos_ids(model, tokenizer)
    enc = tokenizer(prompts, add_special_tokens=add_special_tokens)
    prefixes = [list(ids) for ids in enc["input_ids"]]
    generated = [[] for _ in prompts]
    done = [False] * len(prompts)
    weights = value_model.linear_weights(torch.float32, model.device)
    with ActivationCapture(model, dtype=torch.float32) as capture:
        while not all(done) and len(generated[0]) < max_new_tokens:
            block = min(block_size, max_new_tokens - len(generated[0]))
            config = generation_config(model, tokenizer, block, do_sample=True, temperature=temperature,
                                       top_k=top_k, top_p=top_p, num_return_sequences=num_candidates)
            batch = tokenizer.pad({"input_ids": [p + g for p, g in zip(prefixes, generated)]}, return_tensors="pt")
            out = model.generate(**{k: v.to(model.device) for k, v in batch.items()}, generation_config=config)
            tokens = out[:, batch["input_ids"].shape[1]:]
            last = valid_steps(tokens, eos).sum(1) - 1  # the state that chose each candidate's last real token
            states = capture.pop()[torch.arange(tokens.shape[0]), last.cpu()]
            values = value_and_gradient(weights, states)[0].view(len(prompts), num_candidates)
            best = values.argmax(1)
            for i in range(len(prompts)):
                if done[i]:
                    generated[i] += [tokenizer.pad_token_id] * tokens.shape[1]
                    continue
                row = tokens[i * num_candidates + int(best[i])].tolist()
                generated[i] += row
                done[i] = any(t in eos for t in row)
            if tokens.shape[1] < block:  # every candidate ended: nothing left to generate
                break
    generated = torch.tensor(generated)
    mask = valid_steps(generated, eos)
    return decode_rows(tokenizer, [list(ids) for ids in enc["input_ids"]], generated, mask)


@dataclass(frozen=True)
class CDPrefixOptions(SampledCandidates):
    block_size: int = option(8, "cd_prefix: tokens per block", parse=positive_int)


class CDPrefix(DecodingMethod):
    name, label, Options, engines, uses_value_model = "cd_prefix", "CD prefix", CDPrefixOptions, ("hf",), True

    def run_part(self, options, value_tag):
        return f"cd_prefix_{value_tag}_{options.num_candidates}_{options.block_size}"

    @contextlib.contextmanager
    def session(self, resources, options):
        engine = resources.engine
        value_model = resources.value_model().to(engine.model.device)
        yield lambda texts, _conversations: cd_prefix_decode(
            engine.model, engine.tokenizer, texts, value_model, options.num_candidates, options.block_size,
            resources.max_new_tokens, options.temperature, 50, options.top_p, engine.add_special_tokens)


register(CDPrefix())
