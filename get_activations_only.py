"""Stage 1: generate responses and keep the final-layer hidden state o_t of every decoding step.

The paper's command line (GPU, hub access):
    python get_activations_only.py --model_name llama3_8B --dataset_name shp

The embedded offline default (CPU):
    python get_activations_only.py --model_name smollm2_135M --dataset_name demo --max_new_tokens 48

Writes, for each split:
    features/{m}_{d}_token_wise_activations_{split}.safetensors  valid steps' o_t, back to back, float16
                                                         ([sum of valid steps, d]; the original: padded .pth)
    features/{m}_{d}_mask_{split}.pth                    [responses, max_new_tokens] bool: valid steps
    features/{m}_{d}_response_{split}.json               [{prompt, response, results, conversation}, ...]
Each batch is saved as it finishes (features/..._response_{split}.json.parts/): after a crash, the same command
resumes; a split already written with the same settings is skipped. Under `accelerate launch --num_processes P` the batches are shared between P processes; the files are the
same as with one.
Step 0 is the state after the prompt (it chooses the first token); a step is valid until the one that chose eos.
"""
from utils import cli
from utils.stages.stage1_activations import run_get_activations


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


def main(argv=None):
    args = parse_args(argv)
    cli.setup(args)
    run_get_activations(args)


if __name__ == "__main__":
    cli.main_guard(main)
