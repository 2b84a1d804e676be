#!/usr/bin/env bash
# The embedded demo (CPU, offline, about 8 minutes): SmolLM2-135M-Instruct steered toward VADER-positive answers,
# alpha and n chosen on the tuning split, every figure from the test split. Reproduces the README's demo table and
# the first draw of results/smollm2_135M_demo_replicate.md. `bash recipes/demo.sh --dry_run` prints the commands.
exec bash "$(dirname "$0")/../scripts/demo.sh" "$@"
