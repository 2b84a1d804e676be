"""Argument parsing shared by the stage scripts, and the one-line error exit."""
import argparse
import random
import sys

import numpy as np

from utils.errors import UsageError


def str2bool(value):
    """Parse 'True'/'False' (and yes/no/1/0) so that `--flag False` means off."""
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in ("true", "t", "yes", "y", "1", "on"):
        return True
    if lowered in ("false", "f", "no", "n", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (True/False), got {value!r}")


def _bounded(kind, low, inclusive, high=None):
    def parse(value):
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {value!r}")
        if number < low or (number == low and not inclusive):
            relation = ">=" if inclusive else ">"
            raise argparse.ArgumentTypeError(f"must be {relation} {low}, got {value}")
        if high is not None and number > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {value}")
        return number
    parse.__name__ = kind.__name__
    return parse


positive_int = _bounded(int, 1, True)
nonnegative_int = _bounded(int, 0, True)
nonnegative_float = _bounded(float, 0.0, True)
positive_float = _bounded(float, 0.0, False)
unit_float = _bounded(float, 0.0, True, high=1.0)


def _list_of(parse):
    def parse_list(value):
        values = [parse(v) for v in value.split(",") if v.strip()]
        if not values:
            raise argparse.ArgumentTypeError("give at least one value (comma-separated)")
        return values
    parse_list.__name__ = f"list of {parse.__name__}"
    return parse_list


float_list = _list_of(nonnegative_float)  # '0.5,1,2' -> [0.5, 1.0, 2.0]
int_list = _list_of(nonnegative_int)  # '10,20' -> [10, 20]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


class ArgumentParser(argparse.ArgumentParser):
    """Bad flags are reported like every other bad input: one line, exit status 2."""

    def error(self, message):
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


def make_parser(doc):
    """A parser whose description is the script's docstring (with its command lines)."""
    return ArgumentParser(description=doc, formatter_class=HelpFormatter)


def add_model_args(parser, default_model="smollm2_135M"):
    group = parser.add_argument_group("model")
    group.add_argument("--model_name", type=str, default=default_model,
                       help="policy LLM: a paper name (vicuna_7B, falcon_7B, llama3_8B), the embedded default "
                            "smollm2_135M, a hub id or a local model folder")
    group.add_argument("--device", type=str, default="auto",
                       help="'auto' (cuda if available, else cpu), 'cpu', 'cuda', 'cuda:N' or a bare GPU index "
                            "as in the original scripts")
    group.add_argument("--dtype", type=str, default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                       help="weights dtype; 'auto' = bfloat16 on GPU, float32 on CPU")
    group.add_argument("--trust_remote_code", type=str2bool, default=False,
                       help="allow the model repository to run its own Python code (off unless you trust it)")
    group.add_argument("--device_map", type=str, default=None,
                       help="'auto' spreads a model too large for one GPU over all visible GPUs (and CPU) with "
                            "accelerate; overrides --device. Do not combine with accelerate launch")
    group.add_argument("--chat_template", type=str2bool, default=None,
                       help="format prompts with the tokenizer's chat template instead of the paper's "
                            "'User: ...\\nAssistant:' text (default: the model registry's choice)")
    group.add_argument("--adapter", type=str, default=None,
                       help="a LoRA adapter folder (finetune_baseline.py, peft) merged into the policy's weights: "
                            "the fine-tuned model; its name is added after the data set name in every output name")
    return group


def add_data_args(parser, default_dataset="demo"):
    group = parser.add_argument_group("data")
    group.add_argument("--dataset_name", type=str, default=default_dataset,
                       help="hh_rlhf, shp, harmfulqa (loaded with datasets.load_dataset; harmfulqa is a test set "
                            "whose one split answers every split name), demo or demo_ood (shipped in dataset/)")
    group.add_argument("--data_file", type=str, default=None,
                       help="local JSON or JSON-lines file to read prompts from instead of the named data set "
                            "(HH-RLHF 'chosen' dialogues, SHP 'history', or 'prompt'/'question' fields)")
    group.add_argument("--dataset_path", type=str, default=None,
                       help="hub id or local folder passed to datasets.load_dataset instead of the data set's "
                            "default hub id (e.g. a local copy of Anthropic/hh-rlhf)")
    group.add_argument("--limit", type=positive_int, default=None,
                       help="use only the first N prompts of each split (quick runs)")
    return group


def add_generation_args(parser, batch_size=32, max_new_tokens=128):
    group = parser.add_argument_group("generation")
    group.add_argument("--batch_size", type=positive_int, default=batch_size, help="prompts per forward batch")
    group.add_argument("--max_new_tokens", type=positive_int, default=max_new_tokens,
                       help="maximum number of generated tokens per response")
    group.add_argument("--max_prompt_tokens", type=positive_int, default=512,
                       help="prompts longer than this many tokens are dropped (as in the paper)")
    group.add_argument("--seed", type=int, default=0, help="random seed (sampling, shuffling)")
    group.add_argument("--num_threads", type=positive_int, default=None,
                       help="torch CPU threads (default: torch's choice)")
    return group


def add_output_args(parser):
    parser.add_argument("--output_dir", type=str, default=".",
                        help="root folder under which features/, trained_model/, response/ ... are read and written")
    parser.add_argument("--overwrite", type=str2bool, default=False,
                        help="replace outputs that a run with other settings wrote (and discard its unfinished "
                             "batches); without it such a run is refused")


def add_reward_stage_args(parser):
    """The flags of every stage that scores texts with a reward model."""
    add_output_args(parser)
    group = parser.add_argument_group("reward model")
    group.add_argument("--reward_model", type=str, default="vader",
                       help="'vader' (embedded: VADER sentiment of the answer), openbmb/UltraRM-13b, or any "
                            "sequence-classification reward model (hub id or folder), e.g. argsearch/llama-7b-rm-float32")
    group.add_argument("--batch_size", type=positive_int, default=32, help="texts per reward-model batch")
    group.add_argument("--device", type=str, default="auto", help="'auto', 'cpu', 'cuda', 'cuda:N' or a GPU index")
    group.add_argument("--dtype", type=str, default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                       help="reward-model dtype; 'auto' = bfloat16 on GPU, float32 on CPU")
    group.add_argument("--trust_remote_code", type=str2bool, default=False,
                       help="allow the reward model's repository to run its own code")
    group.add_argument("--seed", type=int, default=0, help="random seed")
    return group


def add_engine_args(parser):
    group = parser.add_argument_group("engine")
    group.add_argument("--engine", type=str, default="hf", choices=["hf", "vllm"],
                       help="generation engine: 'hf' (transformers' generate, the reference) or 'vllm' (faster; the "
                            "same edit inside vLLM's runner; needs `bash scripts/setup.sh --vllm`)")
    group.add_argument("--tensor_parallel_size", type=positive_int, default=1,
                       help="vllm: GPUs that split each layer (vLLM's tensor parallelism)")
    group.add_argument("--pipeline_parallel_size", type=positive_int, default=1,
                       help="vllm: GPUs (or nodes, through Ray) that split the layers into stages")
    group.add_argument("--data_parallel_size", type=positive_int, default=1,
                       help="vllm: engine replicas that share the prompts")
    group.add_argument("--gpu_memory_utilization", type=unit_float, default=None,
                       help="vllm: fraction of each GPU's memory vLLM may take (weights + KV cache); default 0.9 on "
                            "GPU, and on CPU (where it is a share of the machine's RAM) half of what is free")
    return group


def add_policy_stage_args(parser, batch_size, max_new_tokens):
    """The flags of every stage that generates with the policy LLM."""
    add_model_args(parser)
    add_data_args(parser)
    add_generation_args(parser, batch_size=batch_size, max_new_tokens=max_new_tokens)
    add_engine_args(parser)
    add_output_args(parser)


def set_seed(seed):
    import torch
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup(args):
    """Seed, thread count and working folder, common to every stage."""
    import torch
    if getattr(args, "num_threads", None):
        torch.set_num_threads(args.num_threads)
    set_seed(getattr(args, "seed", 0))


def main_guard(main):
    """Run main(); a UsageError becomes one line on stderr and exit status 2."""
    try:
        main()
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume (finished batches are kept)", file=sys.stderr)
        sys.exit(130)
