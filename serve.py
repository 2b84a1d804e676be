"""Serve RE-Control: vLLM's OpenAI-compatible server, each request choosing its value model, step size and number of
updates (vllm_xargs). Requests of every kind share the batches; each row gets its own request's edit.

The embedded demo, on CPU (after `bash scripts/demo.sh`; the value model and the setting chosen for it):
    python serve.py --value_model demo=runs/demo/trained_model/value_model_smollm2_135M_demo_0.001_td1_vf0.1_es \\
        --settings_from demo=results/smollm2_135M_demo_sweep.json --port 8000

A paper setting on GPUs, with vLLM's own flags passed through (here an API key and CUDA graphs left on):
    python serve.py --model_name llama3_8B --value_model shp=trained_model/value_model_llama3_8B_shp_0.001 \\
        --tensor_parallel_size 2 --api-key "$KEY"

A request (the openai client: extra_body={"vllm_xargs": {...}}):
    curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' -d '{"model": "smollm2_135M",
        "messages": [{"role": "user", "content": "I failed my driving test today."}], "max_tokens": 40,
        "temperature": 0, "vllm_xargs": {"value_model": "demo", "step_size": 3.0, "num_updates": 10}}'

vllm_xargs: value_model (a NAME given with --value_model; none: a plain answer), step_size (alpha >= 0) and
num_updates (n, 0..--max_num_updates); alpha and n default to the value model's setting (--settings_from, else the
paper's). Bad input is HTTP 400 with one message. Every flag not listed below goes to vLLM's server (`vllm serve
--help`: --host, --port, --api-key, --max-num-seqs, --enforce-eager, ...). docs/serving.md has the rest: endpoints,
errors, what the server does not protect against, and how to scale it.
"""
import sys

from utils import cli
from utils.config import build
from utils.configs import SERVE_EXCLUDED, EngineOptions, ModelOptions, ServeConfig
from utils.errors import UsageError


def build_parser():
    parser = cli.build_parser(__doc__, ModelOptions, EngineOptions, ServeConfig, exclude=SERVE_EXCLUDED)
    parser.allow_abbrev = False  # vLLM's flags pass through: --model must not read as --model_name
    return parser


def parse_args(argv=None):
    """(ServeConfig, the flags left for vLLM's server)."""
    parser = build_parser()
    values, passed = parser.parse_known_args(argv)
    try:
        return build(ServeConfig, vars(values)), passed
    except UsageError as err:
        parser.error(str(err))


def main(argv=None):
    from utils import serving
    from utils.models import config_hidden_size, resolve_model
    from utils.vllm_engine import prepare_environment, require_vllm
    config, passed = parse_args(argv)
    serving.refuse_owned_flags(passed)
    named = serving.parse_named(config.value_model, "--value_model")
    if not named:
        raise UsageError("give at least one --value_model NAME=PATH (a value model written by train_value_model.py)")
    spec = resolve_model(config.model_name, config.chat_template)
    served, value_models = serving.load_served(named, serving.parse_named(config.settings_from, "--settings_from"),
                                               config.model_name, config_hidden_size(spec, config.trust_remote_code),
                                               config.max_num_updates)
    require_vllm()
    vllm_argv = serving.vllm_server_argv(config, spec, passed)
    prepare_environment()
    from vllm.entrypoints.serve.utils.api_utils import cli_env_setup
    cli_env_setup()
    args = serving.parse_vllm_args(vllm_argv)
    serving.SERVED = served
    print(serving.describe_served(served), flush=True)
    import uvloop  # a dependency of vllm, as in vLLM's own entry point
    try:
        uvloop.run(serving.run_server(args, served, value_models))
    except KeyboardInterrupt:
        print("server stopped", file=sys.stderr)


if __name__ == "__main__":
    cli.main_guard(main)
