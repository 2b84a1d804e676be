#!/usr/bin/env bash
# RE-Control overhead on a random Llama-3-8B-shaped model in bf16 on a CUDA GPU: see bench/gpu_check.py; then
# serving (serve.py with CUDA graphs against eager): see bench/gpu_serve_check.py.
#   bash bench/gpu_check.sh            # GPU -> bench/gpu_results.{json,md}, bench/gpu_serve.{json,md}
#   bash bench/gpu_check.sh --tiny     # CPU smoke test -> bench/gpu_results_tiny.*, bench/gpu_serve_tiny.*
# With the vLLM extra in .venv (bash scripts/setup.sh --vllm on the GPU machine) it also times vLLM against HF and
# RE-Control inside vLLM (vllm_over_hf_throughput, recontrol_over_plain_time_vllm); --skip_vllm leaves them out.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=python3
if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$PYTHON" bench/gpu_check.py "$@"
"$PYTHON" bench/gpu_serve_check.py "$@"
