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
resumes; a split already written with the same settings is skipped. Under `accelerate launch --num_processes P`
the batches are shared between P processes; the files are the
same as with one.
Step 0 is the state after the prompt (it chooses the first token); a step is valid until the one that chose eos.
"""
from utils import cli
from utils.configs import ActivationsConfig
from utils.stages.stage1_activations import run_get_activations


def build_parser():
    return cli.build_parser(__doc__, ActivationsConfig)


def parse_args(argv=None):
    return cli.parse_config(build_parser(), ActivationsConfig, argv)


def main(argv=None):
    args = parse_args(argv)
    cli.setup(args)
    run_get_activations(args)


if __name__ == "__main__":
    cli.main_guard(main)
