"""Stage 1: generate responses and keep the final-layer hidden state o_t of every decoding step.

The paper's command line (GPU, hub access):
    python get_activations_only.py --model_name llama3_8B --dataset_name shp

The embedded offline default (CPU):
    python get_activations_only.py --model_name smollm2_135M --dataset_name demo --max_new_tokens 48

Writes, for each split:
    features/{m}_{d}_token_wise_activations_{split}.pth  valid steps' o_t, back to back ([sum of valid steps, d])
    features/{m}_{d}_mask_{split}.pth                    [responses, max_new_tokens] bool: valid steps
    features/{m}_{d}_response_{split}.json               [{prompt, response, results, conversation}, ...]
Step 0 is the state after the prompt (it chooses the first token); a step is valid until the one that chose eos.
"""
import time

import torch
from tqdm.auto import tqdm

from utils import cli
from utils.data import load_prompts
from utils.generation import decode_rows, generate_batch, generation_config, length_sorted_batches
from utils.intervention import ActivationCapture
from utils.io import features_path, model_tag, save_json, save_tensors, write_sidecar
from utils.models import hidden_size, load_model_and_tokenizer, resolve_model


def parse_args(argv=None):
    parser = cli.make_parser(__doc__)
    cli.add_policy_stage_args(parser, batch_size=32, max_new_tokens=128)
    parser.add_argument("--num_samples", type=cli.positive_int, default=1,
                        help="responses per prompt: 1 = greedy; K > 1 = K sampled responses")
    parser.add_argument("--temperature", type=cli.positive_float, default=0.7, help="sampling temperature")
    parser.add_argument("--top_k", type=cli.positive_int, default=50, help="sampling top-k")
    parser.add_argument("--top_p", type=cli.positive_float, default=0.95, help="sampling nucleus top-p")
    parser.add_argument("--splits", type=str, default="train,test", help="comma-separated splits to process")
    parser.add_argument("--feature_dtype", type=str, default="float16", choices=["float16", "bfloat16", "float32"],
                        help="dtype the features are stored in")
    return parser.parse_args(argv)


def capture_split(args, model, tokenizer, spec, split):
    prompts = load_prompts(args, split, spec, tokenizer)
    k = args.num_samples
    config = generation_config(model, tokenizer, args.max_new_tokens, do_sample=k > 1, temperature=args.temperature,
                               top_k=args.top_k, top_p=args.top_p, num_return_sequences=k)
    n = len(prompts) * k
    features, masks, records = [None] * n, torch.zeros(n, args.max_new_tokens, dtype=torch.bool), [None] * n
    add_special = not spec.chat_template
    batches = length_sorted_batches([p["prompt"] for p in prompts], tokenizer, args.batch_size, add_special)
    with ActivationCapture(model, dtype=getattr(torch, args.feature_dtype)) as capture:
        for batch in tqdm(batches, desc=f"{split}: generating"):
            prompt_ids, tokens, mask = generate_batch(model, tokenizer, [prompts[i]["prompt"] for i in batch],
                                                      config, add_special)
            states = capture.pop()
            assert states.shape[1] == tokens.shape[1], "one captured state per generated token"
            responses, results = decode_rows(tokenizer, prompt_ids, tokens, mask)
            for j in range(len(prompt_ids)):
                prompt = prompts[batch[j // k]]
                row = batch[j // k] * k + j % k
                features[row] = states[j][mask[j]].cpu()
                masks[row, :mask.shape[1]] = mask[j].cpu()
                records[row] = {"prompt": prompt["prompt"], "response": responses[j], "results": results[j],
                                "conversation": prompt["conversation"]}
    return torch.cat(features), masks, records


def main(argv=None):
    args = parse_args(argv)
    cli.setup(args)
    # ------------------------------------------------------------------------------------------------------ load
    spec = resolve_model(args.model_name, args.chat_template)
    model, tokenizer = load_model_and_tokenizer(spec, args.device, args.dtype, args.trust_remote_code)
    m = model_tag(args.model_name)
    # ------------------------------------------------------------------------------------------------------ run + save
    for split in [s.strip() for s in args.splits.split(",") if s.strip()]:
        start = time.time()
        features, masks, records = capture_split(args, model, tokenizer, spec, split)
        seconds = time.time() - start
        save_tensors(features, features_path(args.output_dir, m, args.dataset_name, "token_wise_activations", split))
        save_tensors(masks, features_path(args.output_dir, m, args.dataset_name, "mask", split))
        out = features_path(args.output_dir, m, args.dataset_name, "response", split)
        save_json(records, out)
        write_sidecar(out, args, split=split, llm=args.model_name, llm_path=spec.path, hidden_size=hidden_size(model),
                      responses=len(records), valid_steps=int(masks.sum()), seconds=round(seconds, 2))
        print(f"{split}: {len(records)} responses, {int(masks.sum())} valid steps, {seconds:.1f} s -> {out}")


if __name__ == "__main__":
    cli.main_guard(main)
