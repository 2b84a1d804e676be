#!/usr/bin/env bash
# Set up .venv (with the vLLM extra, whose engine tests/test_vllm.py checks against HF) and run the whole offline
# test suite (CI runs exactly this through .ci/run). VLLM=0 skips the extra; its tests then skip.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${VLLM:-1}" = 0 ]; then bash scripts/setup.sh; else bash scripts/setup.sh --vllm; fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check --quiet .   # pyflakes, unused arguments, import order (ruff.toml)
# two workers, one file each at a time (module fixtures such as test_serve's server start once): the suite's tests
# mostly wait on one core (tiny models at one thread, subprocesses); TEST_WORKERS=0 runs them in this process
exec .venv/bin/python -m pytest -q -n "${TEST_WORKERS:-2}" --dist loadfile tests "$@"
