"""Batched generation with left padding: the loops shared by stage 1 (capture), stage 4 and the comparison methods."""
import time

import torch
from transformers import GenerationConfig

from utils.io import save_json, write_sidecar
from utils.runs import BatchRun, seed_batch


def eos_ids(model, tokenizer):
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, (list, tuple)) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


def generation_config(model, tokenizer, max_new_tokens, do_sample=False, temperature=0.7, top_k=50, top_p=0.95,
                      num_return_sequences=1, use_cache=True):
    sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p) if do_sample else {}
    return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=do_sample, pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=eos_ids(model, tokenizer), num_return_sequences=num_return_sequences,
                            use_cache=use_cache, **sampling)


def valid_steps(tokens, eos):
    """Step t is valid if no eos came before it (the step that chooses eos is valid, its successors are padding)."""
    is_eos = torch.isin(tokens, torch.tensor(eos, device=tokens.device))
    finished_before = (torch.cumsum(is_eos.int(), dim=1) - is_eos.int()) > 0
    return ~finished_before


def length_sorted_batches(prompts, tokenizer, batch_size, add_special_tokens):
    """Indices of `prompts` in batches of similar token length (less padding); callers restore the order."""
    lengths = [len(tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"]) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def generate_batch(model, tokenizer, prompts, config, add_special_tokens=True):
    """Left-padded generation; returns (prompt ids without padding per row, generated tokens [B*K, T], valid mask)."""
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens)
    enc = {k: enc[k].to(model.device) for k in ("input_ids", "attention_mask")}  # no token_type_ids (Falcon)
    out = model.generate(**enc, generation_config=config)
    prompt_len = enc["input_ids"].shape[1]
    tokens = out[:, prompt_len:]
    mask = valid_steps(tokens, config.eos_token_id)
    k = config.num_return_sequences
    prompt_ids = [ids[m.bool()].tolist() for ids, m in zip(enc["input_ids"], enc["attention_mask"]) for _ in range(k)]
    return prompt_ids, tokens, mask


def decode_rows(tokenizer, prompt_ids, tokens, mask):
    """(response = prompt + generation, results = generation) texts, special tokens removed."""
    responses, results = [], []
    for ids, row, valid in zip(prompt_ids, tokens.tolist(), mask.tolist()):
        generated = [t for t, v in zip(row, valid) if v]
        results.append(tokenizer.decode(generated, skip_special_tokens=True).strip())
        responses.append(tokenizer.decode(ids + generated, skip_special_tokens=True))
    return responses, results


def answer_prompts(args, prompts, tokenizer, add_special_tokens, decode_batch, desc, out, settings, **description):
    """Stage 4 and the comparison methods: decode_batch(texts, conversations) -> (responses, results) over
    length-sorted batches, each saved as it finishes (a crashed run resumes; `accelerate launch` shares the batches),
    then the records in the prompts' order written to `out` with a .meta.json (settings, seconds, `description`).

    Returns the records, or None in the processes that do not write the output.
    """
    batches = length_sorted_batches([p["prompt"] for p in prompts], tokenizer, args.batch_size, add_special_tokens)
    run = BatchRun(out, settings, len(batches), args.overwrite)
    for i in run.progress(desc):
        seed_batch(args.seed, i)
        start = time.time()
        responses, results = decode_batch([prompts[j]["prompt"] for j in batches[i]],
                                          [prompts[j]["conversation"] for j in batches[i]])
        records = [{"prompt": prompts[j]["prompt"], "response": responses[k], "results": results[k],
                    "conversation": prompts[j]["conversation"]} for k, j in enumerate(batches[i])]
        run.save(i, {"records": records, "seconds": time.time() - start})
    if not run.merging():
        return None
    records, seconds = [None] * len(prompts), 0.0
    for batch, part in zip(batches, run.results()):
        seconds += part["seconds"]
        for j, record in zip(batch, part["records"]):
            records[j] = record
    save_json(records, out)
    write_sidecar(out, args, settings, seconds=round(seconds, 3), num_prompts=len(records), **description)
    run.finish()
    print(f"{len(records)} responses in {seconds:.1f} s of decoding -> {out}")
    return records
