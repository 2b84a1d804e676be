"""Stage 1: generate responses and keep the final-layer hidden state o_t of every decoding step (see
get_activations_only.py for the files)."""
import contextlib
import os
import time

import torch

from utils.data import load_prompts
from utils.features import write_rows
from utils.generation import decode_rows, generate_batch, generation_config, length_sorted_batches
from utils.intervention import ActivationCapture
from utils.io import features_path, peak_memory_mb, run_settings, save_json, save_tensors, write_sidecar
from utils.models import (
    config_hidden_size,
    hidden_size,
    load_model_and_tokenizer,
    load_policy_tokenizer,
    resolve_model,
)
from utils.names import model_tag, named_dataset
from utils.runs import BatchRun, refuse_overwrite, seed_batch, written_with


def split_outputs(args, m, split):
    """(features, mask, responses) paths of a split; the responses' .meta.json describes all three."""
    return [features_path(args.output_dir, m, named_dataset(args), kind, split)
            for kind in ("token_wise_activations", "mask", "response")]


def split_written(paths, settings):
    """True if a finished run with these settings wrote all of a split's files (the same command skips it)."""
    return written_with(paths[2], settings) and all(os.path.exists(p) for p in paths)


def capture_split(args, model, tokenizer, spec, prompts, split, run_for):
    """Generate and capture batch by batch, each batch saved as it finishes; returns (run, batches, responses).

    `model` is a transformers model (ActivationCapture on its final norm) or, with --engine vllm, a VllmEngine
    (the same rows captured inside vLLM's runner).
    """
    k = args.num_samples
    add_special = not spec.chat_template
    batches = length_sorted_batches([p["prompt"] for p in prompts], tokenizer, args.batch_size, add_special)
    run = run_for(len(batches))
    feature_dtype = getattr(torch, args.feature_dtype)
    if args.engine == "vllm":
        from utils.vllm_engine import pad_tokens, prompt_token_ids
        capture = contextlib.nullcontext()

        def capture_batch(i, texts):
            ids = prompt_token_ids(tokenizer, texts, add_special)
            captured = model.capture(ids, args.max_new_tokens, do_sample=k > 1, temperature=args.temperature,
                                     top_k=args.top_k, top_p=args.top_p, num_samples=k,
                                     seed=args.seed * 1_000_003 + i * args.batch_size * k)  # one per response
            tokens, mask = pad_tokens(captured.tokens, tokenizer.pad_token_id)
            return [row for row in ids for _ in range(k)], tokens, mask, captured.rows()[0].to(feature_dtype)
    else:
        config = generation_config(model, tokenizer, args.max_new_tokens, do_sample=k > 1,
                                   temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                                   num_return_sequences=k)
        capture = ActivationCapture(model, dtype=feature_dtype)

        def capture_batch(i, texts):
            seed_batch(args.seed, i)
            prompt_ids, tokens, mask = generate_batch(model, tokenizer, texts, config, add_special)
            states = capture.pop()
            assert states.shape[1] == tokens.shape[1], "one captured state per generated token"
            return prompt_ids, tokens, mask, states[mask.to(states.device)].cpu()
    with capture:
        for i in run.progress(f"{split}: generating ({args.engine})"):
            start = time.time()
            prompt_ids, tokens, mask, features = capture_batch(i, [prompts[b]["prompt"] for b in batches[i]])
            responses, results = decode_rows(tokenizer, prompt_ids, tokens, mask)
            rows = [batches[i][j // k] * k + j % k for j in range(len(prompt_ids))]
            records = [{"prompt": prompts[batches[i][j // k]]["prompt"], "response": responses[j],
                        "results": results[j], "conversation": prompts[batches[i][j // k]]["conversation"]}
                       for j in range(len(prompt_ids))]
            run.save(i, {"rows": rows, "lengths": mask.sum(1).tolist(), "records": records,
                         "seconds": time.time() - start}, {"features": features})
    return run, batches, len(prompts) * k


def merge_split(args, run, num_rows, paths, metadata):
    """Write the split's files in the prompts' order from the saved batches, one batch in memory at a time."""
    parts = run.results()
    lengths = torch.zeros(num_rows, dtype=torch.long)
    records = [None] * num_rows
    for part in parts:
        lengths[part["rows"]] = torch.tensor(part["lengths"])
        for row, record in zip(part["rows"], part["records"]):
            records[row] = record
    masks = torch.arange(args.max_new_tokens) < lengths[:, None]  # valid steps are a prefix of each response
    offsets = (torch.cumsum(lengths, 0) - lengths).tolist()

    def blocks():
        for i, part in enumerate(parts):
            features, first = run.load_tensors(i)["features"], 0
            for row in part["rows"]:
                yield offsets[row], features[first:first + int(lengths[row])]
                first += int(lengths[row])
    write_rows(paths[0], int(lengths.sum()), metadata["hidden_size"], getattr(torch, args.feature_dtype), blocks(),
               {k: str(v) for k, v in metadata.items()})
    save_tensors(masks, paths[1])
    save_json(records, paths[2])
    return masks, records, sum(part["seconds"] for part in parts)


def run_get_activations(args, model=None, tokenizer=None):
    """Stage 1 on parsed flags, for every split of --splits not yet written with these settings; returns the
    features paths."""
    m = model_tag(args.model_name)
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    settings = {split: run_settings(args, ignore=("splits",), split=split) for split in splits}
    for split in splits:
        refuse_overwrite(split_outputs(args, m, split)[2], settings[split], args.overwrite)
    finished = [split for split in splits if split_written(split_outputs(args, m, split), settings[split])]
    for split in finished:
        print(f"{split}: already written with these settings -> {split_outputs(args, m, split)[0]} (skipped)")
    splits = [split for split in splits if split not in finished]
    if not splits:
        return [split_outputs(args, m, split)[0] for split in finished]
    # ------------------------------------------------------------------------------------------------------ load
    spec = resolve_model(args.model_name, args.chat_template, args.adapter)
    tokenizer = tokenizer or load_policy_tokenizer(spec, args.trust_remote_code)
    prompts = {split: load_prompts(args, split, spec, tokenizer) for split in splits}
    if model is None and args.engine == "vllm":
        from utils.vllm_engine import open_engine
        model = open_engine(args, spec)
    if model is None:
        model, tokenizer = load_model_and_tokenizer(spec, args.device, args.dtype, args.trust_remote_code,
                                                    args.device_map, tokenizer)
    width = config_hidden_size(spec, args.trust_remote_code) if args.engine == "vllm" else hidden_size(model)
    # ------------------------------------------------------------------------------------------------------ run + save
    for split in splits:
        paths = split_outputs(args, m, split)
        run, batches, num_rows = capture_split(
            args, model, tokenizer, spec, prompts[split], split,
            lambda n: BatchRun(paths[2], settings[split], n, args.overwrite))
        if not run.merging():
            continue  # another process writes the files
        metadata = dict(llm=args.model_name, llm_path=spec.path, **({"adapter": args.adapter} if args.adapter else {}),
                        hidden_size=width, split=split,
                        layout="valid steps of every response, back to back; lengths = mask.sum(1)")
        masks, records, seconds = merge_split(args, run, num_rows, paths, metadata)
        write_sidecar(paths[2], args, settings[split], responses=len(records), valid_steps=int(masks.sum()),
                      seconds=round(seconds, 2), **peak_memory_mb(), **metadata)
        run.finish()
        print(f"{split}: {len(records)} responses, {int(masks.sum())} valid steps, {seconds:.1f} s of generation "
              f"-> {paths[0]}")
    return [split_outputs(args, m, split)[0] for split in finished + splits]
