#!/usr/bin/env bash
# The embedded default end to end on CPU, offline: SmolLM2-135M-Instruct steered toward positive answers (VADER).
# Three disjoint prompt splits (dataset/demo_{train,tune,test}.jsonl): the value model learns from the training
# split, alpha and n were chosen on the tuning split (results/smollm2_135M_demo_sweep.json, written by
# scripts/replicate.sh; SWEEP=1 re-runs that sweep here), and every figure of the final table comes from the test
# split. The judge (stage 7) runs only if OPENAI_API_KEY or JUDGE_BASE_URL is set.
# Outputs go to $OUT (default runs/demo). About 6 minutes on an idle 2-core CPU once .venv is set up (set-up: 1 more).
# `bash scripts/demo.sh --dry_run` (or recipes/demo.sh --dry_run) prints the stage commands and runs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
DRY_RUN=0
case "${1:-}" in --dry_run|--help|-h) DRY_RUN=1 ;; esac
# each stage command, printed (--dry_run) or run and timed (the times end the output: where the minutes go)
TIMES=()
run() {
  if [ "$DRY_RUN" = 1 ]; then printf '%q ' "$@"; echo; return; fi
  local start=$SECONDS
  "$@"
  TIMES+=("$(printf '%4d s  %s' $((SECONDS - start)) "${*:2}" | cut -c1-118)")
}
# the name of the run stage 4 writes for these flags, as stage 4 itself names it (--print_run_name; in a dry run
# before stage 3, a value model not yet trained is named by its plain paper name)
run_name() { "$@" --print_run_name True; }
[ "$DRY_RUN" = 1 ] || run bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=.venv/bin/python
OUT=${OUT:-runs/demo}
COMMON=(--model_name smollm2_135M --dataset_name demo --output_dir "$OUT")
source scripts/demo_settings.sh
SETTINGS=results/smollm2_135M_demo_sweep.json

# 1. activations: the 400 training prompts x 2 sampled responses; the tuning prompts greedily (the reported loss)
run $PY get_activations_only.py "${COMMON[@]}" --splits train --limit 400 --num_samples 2 --max_new_tokens $NEW_TOKENS
run $PY get_activations_only.py "${COMMON[@]}" --splits tune --max_new_tokens $NEW_TOKENS
# 2. reward labels
run $PY reward_label.py "${COMMON[@]}" --reward_model vader --mode train
run $PY reward_label.py "${COMMON[@]}" --reward_model vader --mode tune
# 3. value model: every step regressed on the final reward, the epoch kept by a 10% validation slice of train
# shellcheck disable=SC2086
run $PY train_value_model.py "${COMMON[@]}" --lr $VALUE_LR $VALUE_FLAGS --eval_split tune
# (optional) choose alpha and n here, on the tuning split, instead of reading the committed choice. Also done when
# the committed choice was made for another value model: on a host whose CPU kernels round differently, stage 3
# trains other weights from the same labels (docs/prompt-dependent.md#the-same-command-on-a-second-host)
# (a dry run has no value model to compare, and prints the committed-choice commands)
if [ "$DRY_RUN" = 0 ] && [ "${SWEEP:-0}" != 1 ] \
    && ! $PY -m utils.sweep "$SETTINGS" "$OUT/trained_model/value_model_smollm2_135M_demo_$VALUE_TAG"; then
  echo "note: $SETTINGS was chosen for another value model; choosing alpha and n for this one on the tuning split"
  SWEEP=1
fi
if [ "${SWEEP:-0}" = 1 ]; then
  run $PY sweep.py "${COMMON[@]}" --split tune --value_lr $VALUE_LR --step_sizes "$STEP_SIZES" --num_updates "$NUM_UPDATES" \
      --rule "$RULE" --max_new_tokens $NEW_TOKENS --batch_size 50 --embedding_model minilm
  SETTINGS="$OUT/results/smollm2_135M_demo_sweep.json"
fi
# 4. base and RE-Control on the test split, alpha and n as chosen on the tuning split
BASE_RUN=($PY inference_intervention.py "${COMMON[@]}" --use_intervention False --max_new_tokens $NEW_TOKENS --batch_size 50)
STEERED_RUN=($PY inference_intervention.py "${COMMON[@]}" --use_intervention True --value_lr $VALUE_LR \
    --settings_from "$SETTINGS" --max_new_tokens $NEW_TOKENS --batch_size 50)
run "${BASE_RUN[@]}"
run "${STEERED_RUN[@]}"
BASE=$(run_name "${BASE_RUN[@]}")
RUN=$(run_name "${STEERED_RUN[@]}")
# 5-6. reward, diversity and coherence (SimCSE's BERT is on the hub: the MiniLM folder from PyPI stands in)
run $PY measure_reward.py "${COMMON[@]}" --out_file "$BASE"
run $PY measure_reward.py "${COMMON[@]}" --out_file "$RUN" --baseline "$BASE"
for run in "$BASE" "$RUN"; do
  run $PY metrics.py --output_dir "$OUT" --run_name "$run" --embedding_model minilm
done
# 7. the paid judge, only when one is configured (JUDGE_BASE_URL: any OpenAI-compatible server)
if [ -n "${OPENAI_API_KEY:-}" ] || [ -n "${JUDGE_BASE_URL:-}" ]; then
  run $PY gpt4_eval.py --output_dir "$OUT" --run_name_red "$RUN" --run_name_blue "$BASE" \
      ${JUDGE_BASE_URL:+--base_url "$JUDGE_BASE_URL"} ${JUDGE_MODEL:+--judge_model "$JUDGE_MODEL"}
fi
run $PY make_table.py "${COMMON[@]}"
run $PY report_html.py "${COMMON[@]}"
if [ "$DRY_RUN" = 0 ]; then
  echo "demo: $SECONDS s in all; by stage command:"
  printf '%s\n' "${TIMES[@]}"
fi
