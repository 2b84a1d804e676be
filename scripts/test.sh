#!/usr/bin/env bash
# Set up .venv and run the whole offline test suite (CI runs exactly this through .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check --quiet .   # pyflakes, unused arguments, import order (ruff.toml)
exec .venv/bin/python -m pytest -q tests "$@"
