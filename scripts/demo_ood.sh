#!/usr/bin/env bash
# Out of distribution on the embedded demo (CPU, offline, about 3 minutes after scripts/demo.sh): the demo's value
# model, trained on rollouts of the demo's personal questions, steers SmolLM2-135M-Instruct on prompts of another kind
# (dataset/demo_ood.jsonl: 90 tasks and instructions, 14 of them adversarial), at the demo's alpha and n (chosen on
# the demo's tuning split). Base, RE-Control and RE-Control + Prompting are scored with VADER (stage 5) and stage 6
# (MiniLM for coherence); the judge (stage 7, against base) runs only if OPENAI_API_KEY or JUDGE_BASE_URL is set.
# Reads $DEMO (default runs/demo, written by scripts/demo.sh) or VALUE_MODEL=path; writes $OUT (default runs/demo_ood).
# `bash scripts/demo_ood.sh --dry_run` prints the stage commands and runs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
DRY_RUN=0
case "${1:-}" in --dry_run|--help|-h) DRY_RUN=1 ;; esac
run() { if [ "$DRY_RUN" = 1 ]; then printf '%q ' "$@"; echo; else "$@"; fi; }
# the name of the run stage 4 writes for these flags, as stage 4 itself names it (--print_run_name)
run_name() { "$@" --print_run_name True; }
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PY:-.venv/bin/python}
DEMO=${DEMO:-runs/demo}
OUT=${OUT:-runs/demo_ood}
source scripts/demo_settings.sh
VALUE_MODEL=${VALUE_MODEL:-$DEMO/trained_model/value_model_smollm2_135M_demo_$VALUE_TAG.safetensors}
# alpha and n: the demo's own sweep where demo.sh chose them for its value model (SWEEP=1, or a host whose CPU
# kernels train other weights than the committed choice was made for), else the committed choice
# (stage 4 refuses a choice made for another value model); SETTINGS=path overrides both
if [ -z "${SETTINGS:-}" ]; then
  SETTINGS=results/smollm2_135M_demo_sweep.json
  [ ! -f "$DEMO/results/smollm2_135M_demo_sweep.json" ] || SETTINGS=$DEMO/results/smollm2_135M_demo_sweep.json
fi
if [ "$DRY_RUN" = 0 ] && [ ! -f "$VALUE_MODEL" ]; then
  echo "error: no value model at $VALUE_MODEL; run scripts/demo.sh first (or set DEMO= or VALUE_MODEL=)" >&2
  exit 2
fi
# a test-only set: its one file answers the split name, which the tables and the runs' records then carry
COMMON=(--model_name smollm2_135M --dataset_name demo_ood --output_dir "$OUT")
STEER=(--use_intervention True --value_model "$VALUE_MODEL" --value_lr "$VALUE_LR" --settings_from "$SETTINGS")
GEN=(--split ood --max_new_tokens "$NEW_TOKENS" --batch_size 50)

# 4. base, RE-Control and RE-Control + Prompting on the OOD prompts (the value model and alpha, n: the demo's)
BASE_RUN=($PY inference_intervention.py "${COMMON[@]}" --use_intervention False "${GEN[@]}")
STEERED_RUN=($PY inference_intervention.py "${COMMON[@]}" "${STEER[@]}" "${GEN[@]}")
run "${BASE_RUN[@]}"
run "${STEERED_RUN[@]}"
run "${STEERED_RUN[@]}" --prompting True
# stage 4 names a run after a value model of another data set by its file name
BASE=$(run_name "${BASE_RUN[@]}")
RUN=$(run_name "${STEERED_RUN[@]}")
# 5-6. reward (VADER, as in distribution), diversity and coherence
run $PY measure_reward.py "${COMMON[@]}" --out_file "$BASE"
PROMPTED=$(run_name "${STEERED_RUN[@]}" --prompting True)
for run in "$RUN" "$PROMPTED"; do
  run $PY measure_reward.py "${COMMON[@]}" --out_file "$run" --baseline "$BASE"
done
for run in "$BASE" "$RUN" "$PROMPTED"; do
  run $PY metrics.py --output_dir "$OUT" --run_name "$run" --embedding_model minilm
done
# 7. the judge against base, only when one is configured (JUDGE_BASE_URL: any OpenAI-compatible server)
if [ -n "${OPENAI_API_KEY:-}" ] || [ -n "${JUDGE_BASE_URL:-}" ]; then
  for run in "$RUN" "$PROMPTED"; do
    run $PY gpt4_eval.py --output_dir "$OUT" --run_name_red "$run" --run_name_blue "$BASE" \
        ${JUDGE_BASE_URL:+--base_url "$JUDGE_BASE_URL"} ${JUDGE_MODEL:+--judge_model "$JUDGE_MODEL"}
  done
fi
run $PY make_table.py "${COMMON[@]}"
