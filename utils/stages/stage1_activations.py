"""Stage 1: generate responses and keep the final-layer hidden state o_t of every decoding step (see
get_activations_only.py for the files)."""
import os
import time

import torch

from utils.data import load_prompts
from utils.engines import Sampling, open_engine
from utils.features import write_rows
from utils.generation import decode_rows, length_sorted_batches
from utils.io import features_path, peak_memory_mb, run_settings, save_json, save_tensors, write_sidecar
from utils.models import load_policy_tokenizer, resolve_model
from utils.names import model_tag, named_dataset
from utils.runs import BatchRun, refuse_overwrite, written_with


def split_outputs(config, m, split):
    """(features, mask, responses) paths of a split; the responses' .meta.json describes all three."""
    return [features_path(config.output_dir, m, named_dataset(config), kind, split)
            for kind in ("token_wise_activations", "mask", "response")]


def split_written(paths, settings):
    """True if a finished run with these settings wrote all of a split's files (the same command skips it)."""
    return written_with(paths[2], settings) and all(os.path.exists(p) for p in paths)


def capture_split(config, engine, prompts, split, run_for, edit=None):
    """Generate and capture batch by batch on `engine` (utils.engines), each batch saved as it finishes; returns
    (run, batches, responses). With `edit` (utils.engines.Edit) the responses are the edited policy's, and the
    states kept are the unedited o_t the edit starts from (the capture hook runs before the edit's)."""
    k = config.num_samples
    batches = length_sorted_batches([p["prompt"] for p in prompts], engine.tokenizer, config.batch_size,
                                    engine.add_special_tokens)
    run = run_for(len(batches))
    feature_dtype = getattr(torch, config.feature_dtype)
    sampling = Sampling(temperature=config.temperature, top_k=config.top_k, top_p=config.top_p)
    with engine.capturing(feature_dtype), engine.editing(edit):
        for i in run.progress(f"{split}: generating ({engine.name})"):
            start = time.time()
            prompt_ids, tokens, mask, features = engine.capture(
                [prompts[b]["prompt"] for b in batches[i]], config.max_new_tokens, sampling, k, config.seed, i,
                config.batch_size, feature_dtype)
            responses, results = decode_rows(engine.tokenizer, prompt_ids, tokens, mask)
            rows = [batches[i][j // k] * k + j % k for j in range(len(prompt_ids))]
            records = [{"prompt": prompts[batches[i][j // k]]["prompt"], "response": responses[j],
                        "results": results[j], "conversation": prompts[batches[i][j // k]]["conversation"]}
                       for j in range(len(prompt_ids))]
            run.save(i, {"rows": rows, "lengths": mask.sum(1).tolist(), "records": records,
                         "seconds": time.time() - start}, {"features": features})
    return run, batches, len(prompts) * k


def merge_split(config, run, num_rows, paths, metadata):
    """Write the split's files in the prompts' order from the saved batches, one batch in memory at a time."""
    parts = run.results()
    lengths = torch.zeros(num_rows, dtype=torch.long)
    records = [None] * num_rows
    for part in parts:
        lengths[part["rows"]] = torch.tensor(part["lengths"])
        for row, record in zip(part["rows"], part["records"]):
            records[row] = record
    masks = torch.arange(config.max_new_tokens) < lengths[:, None]  # valid steps are a prefix of each response
    offsets = (torch.cumsum(lengths, 0) - lengths).tolist()

    def blocks():
        for i, part in enumerate(parts):
            features, first = run.load_tensors(i)["features"], 0
            for row in part["rows"]:
                yield offsets[row], features[first:first + int(lengths[row])]
                first += int(lengths[row])
    write_rows(paths[0], int(lengths.sum()), metadata["hidden_size"], getattr(torch, config.feature_dtype), blocks(),
               {k: str(v) for k, v in metadata.items()})
    save_tensors(masks, paths[1])
    save_json(records, paths[2])
    return masks, records, sum(part["seconds"] for part in parts)


def run_get_activations(config, model=None, tokenizer=None, edit=None, edit_settings=None):
    """Stage 1 (an ActivationsConfig), for every split of --splits not yet written with these settings; returns the
    features paths. model: the policy already open (an HF model or a utils.engines.Engine). edit: RE-Control's edit
    on while generating (utils.engines.Edit; stage 3's on-policy refits), described in the settings by
    `edit_settings` (a dict)."""
    m = model_tag(config.model_name)
    splits = [s.strip() for s in config.splits.split(",") if s.strip()]
    settings = {split: run_settings(config, ignore=("splits",), split=split, edit=edit_settings) for split in splits}
    for split in splits:
        refuse_overwrite(split_outputs(config, m, split)[2], settings[split], config.overwrite)
    finished = [split for split in splits if split_written(split_outputs(config, m, split), settings[split])]
    for split in finished:
        print(f"{split}: already written with these settings -> {split_outputs(config, m, split)[0]} (skipped)")
    splits = [split for split in splits if split not in finished]
    if not splits:
        return [split_outputs(config, m, split)[0] for split in finished]
    # ------------------------------------------------------------------------------------------------------ load
    spec = resolve_model(config.model_name, config.chat_template, config.adapter)
    tokenizer = tokenizer or load_policy_tokenizer(spec, config.trust_remote_code)
    prompts = {split: load_prompts(config, split, spec, tokenizer) for split in splits}
    engine = open_engine(config, spec, tokenizer, model)
    width = engine.hidden_size()
    # ------------------------------------------------------------------------------------------------------ run + save
    for split in splits:
        paths = split_outputs(config, m, split)
        run, batches, num_rows = capture_split(
            config, engine, prompts[split], split, lambda n: BatchRun(paths[2], settings[split], n, config.overwrite),
            edit)
        if not run.merging():
            continue  # another process writes the files
        metadata = dict(llm=config.model_name, llm_path=spec.path,
                        **({"adapter": config.adapter} if config.adapter else {}),
                        hidden_size=width, split=split,
                        layout="valid steps of every response, back to back; lengths = mask.sum(1)")
        masks, records, seconds = merge_split(config, run, num_rows, paths, metadata)
        write_sidecar(paths[2], config, settings[split], responses=len(records), valid_steps=int(masks.sum()),
                      seconds=round(seconds, 2), **peak_memory_mb(), **metadata)
        run.finish()
        print(f"{split}: {len(records)} responses, {int(masks.sum())} valid steps, {seconds:.1f} s of generation "
              f"-> {paths[0]}")
    return [split_outputs(config, m, split)[0] for split in finished + splits]
