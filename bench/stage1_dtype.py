"""Stage 1 in bfloat16 or float32 on CPU: rollout speed, and how faithful the captured features are.

    python bench/stage1_dtype.py                       # SmolLM2-135M, 32 demo training prompts x 40 tokens
    python bench/stage1_dtype.py --value_model runs/demo/trained_model/value_model_smollm2_135M_demo_0.001

Speed: sampled generation with the stage-1 capture hook, batch 16, exactly 40 new tokens, one torch thread,
interleaved rounds, medians. Faithfulness: the float32 model's own rollouts are read again (teacher-forced) by the
bfloat16 model, and the final-norm states at the generated positions are compared with the float32 ones; the
float16 storage of float32 states is compared too; with --value_model, V is read on each. Writes
bench/stage1_dtype.{json,md}.
"""
import argparse
import os
import sys
from types import SimpleNamespace

import torch

# run as a file outside the repository root (python DIR/FILE.py): the root holds utils
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import command_line, environment_lines, forced_config, interleaved, median, record, write_results  # noqa: E402
from utils.data import load_prompts  # noqa: E402
from utils.intervention import ActivationCapture  # noqa: E402
from utils.models import find_final_norm, load_model_and_tokenizer, resolve_model  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_prompts", type=int, default=32, help="demo training prompts")
    parser.add_argument("--batch_size", type=int, default=16, help="prompts per generate call")
    parser.add_argument("--new_tokens", type=int, default=40, help="tokens per response (forced)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (after one warm-up)")
    parser.add_argument("--value_model", type=str, default=None, help="also compare V on the two feature sets")
    parser.add_argument("--out", type=str, default=os.path.join(HERE, "stage1_dtype"), help="output stem")
    return parser.parse_args()


def all_states(model, ids, mask):
    """Final-norm output at every position of a teacher-forced forward, in float32."""
    kept = {}
    handle = find_final_norm(model).register_forward_hook(lambda _m, _i, o: kept.update(o=o.float()))  # returns None
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
    handle.remove()
    return kept["o"]


def main():
    args = parse_args()
    torch.set_num_threads(1)
    spec = resolve_model("smollm2_135M")
    models = {dtype: load_model_and_tokenizer(spec, "cpu", dtype) for dtype in ("float32", "bfloat16")}
    tokenizer = models["float32"][1]
    data_args = SimpleNamespace(dataset_name="demo", data_file=None, dataset_path=None, max_prompt_tokens=512,
                                limit=args.num_prompts)
    prompts = [p["prompt"] for p in load_prompts(data_args, "train", spec, tokenizer)]
    batches = [prompts[i:i + args.batch_size] for i in range(0, len(prompts), args.batch_size)]

    def rollouts(dtype):
        model = models[dtype][0]
        config = forced_config(model, tokenizer, args.new_tokens)
        config.do_sample, config.temperature, config.top_k, config.top_p = True, 0.7, 50, 0.95
        out = []
        with ActivationCapture(model, dtype=torch.float32) as capture:
            for batch in batches:
                torch.manual_seed(0)
                enc = tokenizer(batch, return_tensors="pt", padding=True)
                with torch.no_grad():
                    tokens = model.generate(**enc, generation_config=config)
                capture.pop()
                out.append((enc, tokens))
        return out

    times, outputs, _ = interleaved({d: (lambda d=d: rollouts(d)) for d in models}, args.repeats)
    tokens_per_run = len(prompts) * args.new_tokens
    speed = {d: tokens_per_run / median(t) for d, t in times.items()}
    # ------------------------------------------------------------------------------------------------ faithfulness
    reference, bf16, errors, cosines, half_errors = [], [], [], [], []
    for enc, tokens in outputs["float32"][0]:
        new_tokens = tokens.shape[1] - enc["input_ids"].shape[1]
        mask = torch.cat([enc["attention_mask"],
                          torch.ones(tokens.shape[0], new_tokens, dtype=enc["attention_mask"].dtype)], dim=1)
        start = enc["input_ids"].shape[1] - 1  # the state after the prompt chooses the first new token
        a = all_states(models["float32"][0], tokens, mask)[:, start:-1].flatten(0, 1)
        b = all_states(models["bfloat16"][0], tokens, mask)[:, start:-1].flatten(0, 1)
        reference.append(a)
        bf16.append(b)
        errors.append(((b - a).norm(dim=1) / a.norm(dim=1)))
        cosines.append(torch.nn.functional.cosine_similarity(a, b, dim=1))
        half_errors.append(((a.half().float() - a).norm(dim=1) / a.norm(dim=1)))
    errors, cosines, half_errors = torch.cat(errors), torch.cat(cosines), torch.cat(half_errors)
    records = [
        record("bf16_over_fp32_rollout_speed", speed["bfloat16"] / speed["float32"], unit="x", better="higher"),
        record("fp32_tokens_per_s", speed["float32"], unit="tokens/s", better="higher"),
        record("bf16_tokens_per_s", speed["bfloat16"], unit="tokens/s", better="higher"),
        record("bf16_state_relative_error_median", errors.median().item(), unit="", better="lower"),
        record("bf16_state_relative_error_p99", errors.quantile(0.99).item(), unit="", better="lower"),
        record("bf16_state_cosine_min", cosines.min().item(), unit="", better="higher"),
        record("fp16_storage_relative_error_median", half_errors.median().item(), unit="", better="lower"),
        record("fp16_storage_relative_error_max", half_errors.max().item(), unit="", better="lower"),
    ]
    if args.value_model:
        from utils.value_model import load_value_model
        value_model = load_value_model(args.value_model)
        with torch.no_grad():
            v32, v16 = value_model(torch.cat(reference)), value_model(torch.cat(bf16))
            vhalf = value_model(torch.cat(reference).half().float())
        spread = v32.std().item()
        records += [
            record("value_readout_bf16_mean_abs_diff_over_std", (v16 - v32).abs().mean().item() / spread, unit="",
                   better="lower"),
            record("value_readout_bf16_correlation", torch.corrcoef(torch.stack([v32, v16]))[0, 1].item(), unit="",
                   better="higher"),
            record("value_readout_fp16_storage_mean_abs_diff_over_std", (vhalf - v32).abs().mean().item() / spread,
                   unit="", better="lower"),
        ]
    table = write_results(records, args.out, [f"# Stage 1: bfloat16 against float32 ({command_line()})", ""]
                          + environment_lines(), [f"- {len(prompts)} prompts x {args.new_tokens} tokens, batch "
                                                  f"{args.batch_size}, {args.repeats} timed rounds; states compared: "
                                                  f"{errors.numel()}"])
    print(table)


if __name__ == "__main__":
    main()
