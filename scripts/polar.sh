#!/usr/bin/env bash
# The prompt-dependent task end to end, over K independent draws: each demo prompt asks for a warm answer or for a
# frank, critical one (dataset/demo_polar_*.jsonl, written by scripts/make_demo_polar.py), and the reward is VADER's
# sentiment of the answer times the sign the prompt asks for (vader_polar; TextBlob's the same way is the held-out
# scorer). No fixed direction can serve both halves, so here Static RE is capped and RE-Control's state-dependent edit
# has room to differ. The harness is the demo's (scripts/replicate.sh: stages 1-3 per draw, alpha, n and Static RE's
# strength chosen on the tuning split, base, RE-Control and Static RE on the test split, scored by stages 5-6);
# the report adds each comparison on the warm and the frank half (results/smollm2_135M_demo_polar_replicate.md).
# About 11-23 minutes per draw on 2 CPU cores (idle, 5 draws: 60.2 min on an Intel host, 105.7 min on an AVX2 one);
# SEEDS="0 1 2 3 4" by default. Outputs under $OUT (default runs/polar).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/polar} PER_PROMPT=${PER_PROMPT:-results/per_prompt/polar} DATASET=demo_polar REWARD=vader_polar \
  REPORT_FLAGS="--first_untouched 1 --group_by polarity" exec bash scripts/replicate.sh
