#!/usr/bin/env bash
# The demo's claim, repeated over independent draws. For each seed: stage 1 on the training prompts (400 x 2 sampled
# responses, --seed), stages 2-3, alpha and n chosen on the TUNING split (sweep.py, and Static RE's strength the same
# way), then base, Prompting, RE-Control and Static RE at their chosen settings on the TEST split, scored by stages
# 5-6 (VADER and the held-out TextBlob). Each draw's scored runs are exported as per-prompt files to
# results/per_prompt/replicate/seed*/ (with the sweeps that chose their settings), and
# results/smollm2_135M_demo_replicate.{json,md} ($REPORT) is computed from those files alone
# (scripts/replicate_report.py).
# The first draw (seed 0) is the demo's: its sweeps are copied to results/, where scripts/demo.sh reads them.
# The value model's learning rate is scripts/demo_settings.sh's, chosen on the tuning split by
# scripts/choose_value_lr.py (results/smollm2_135M_demo_value_lr.md).
# About 13 minutes per draw on 2 CPU cores. Outputs under $OUT (default runs/replicate), one folder per seed.
# DATASET=demo_polar REWARD=vader_polar runs the same harness on the prompt-dependent task (scripts/polar.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=.venv/bin/python
OUT=${OUT:-runs/replicate}
SEEDS=${SEEDS:-"0 1 2 3 4"}
PER_PROMPT=${PER_PROMPT:-results/per_prompt/replicate}
DATASET=${DATASET:-demo}
REWARD=${REWARD:-vader}
REPORT_FLAGS=${REPORT_FLAGS:-}
N="smollm2_135M_$DATASET"  # the runs' name prefix
REPORT=${REPORT:-results/${N}_replicate}  # its .md and .json
source scripts/demo_settings.sh
first=""
for seed in $SEEDS; do
  D="$OUT/seed$seed"
  COMMON=(--model_name smollm2_135M --dataset_name "$DATASET" --output_dir "$D")
  echo "=== draw: seed $seed -> $D"
  start=$SECONDS
  # 1-3. rollouts of this draw, labels, value model (the tuning split's greedy answers give the reported loss; they
  # are the same in every draw, so later draws reuse the first draw's)
  $PY get_activations_only.py "${COMMON[@]}" --splits train --limit 400 --num_samples 2 --max_new_tokens $NEW_TOKENS \
      --seed "$seed"
  if [ -n "$first" ]; then
    cp "$first"/features/${N}_*_tune.* "$D/features/"
  else
    $PY get_activations_only.py "${COMMON[@]}" --splits tune --max_new_tokens $NEW_TOKENS
  fi
  for mode in train tune; do $PY reward_label.py "${COMMON[@]}" --reward_model "$REWARD" --mode $mode; done
  # shellcheck disable=SC2086
  $PY train_value_model.py "${COMMON[@]}" --lr $VALUE_LR $VALUE_FLAGS --eval_split tune --seed "$seed"
  # base answers are greedy, the same in every draw: reuse the first draw's (sweep.py and stage 5 check settings)
  if [ -n "$first" ]; then
    mkdir -p "$D/response" "$D/final_reward" "$D/evaluations"
    for folder in response final_reward evaluations; do
      cp "$first/$folder"/${N}_tune_base.* "$D/$folder/"
    done
    for run in base prompting; do  # greedy, no value model: the same answers and scores in every draw
      for folder in response final_reward evaluations; do
        cp "$first/$folder"/${N}_$run.json "$first/$folder"/${N}_$run.meta.json "$D/$folder/"
      done
    done
  fi
  # 4'. choices on the tuning split
  $PY sweep.py "${COMMON[@]}" --reward_model "$REWARD" --split tune --value_lr $VALUE_LR --step_sizes "$STEP_SIZES" --num_updates "$NUM_UPDATES" \
      --rule "$RULE" --max_new_tokens $NEW_TOKENS --batch_size 50 --embedding_model minilm
  $PY sweep.py "${COMMON[@]}" --reward_model "$REWARD" --split tune --method static_re --value_lr $VALUE_LR --strengths "$STRENGTHS" \
      --rule "$RULE" --max_new_tokens $NEW_TOKENS --batch_size 50 --embedding_model minilm
  # 4-6. the test split at the chosen settings
  [ -n "$first" ] || $PY inference_intervention.py "${COMMON[@]}" --use_intervention False \
      --max_new_tokens $NEW_TOKENS --batch_size 50
  [ -n "$first" ] || $PY decode_methods.py "${COMMON[@]}" --method prompting --max_new_tokens $NEW_TOKENS \
      --batch_size 50
  $PY inference_intervention.py "${COMMON[@]}" --use_intervention True --value_lr $VALUE_LR \
      --settings_from "$D/results/${N}_sweep.json" --max_new_tokens $NEW_TOKENS --batch_size 50
  $PY decode_methods.py "${COMMON[@]}" --method static_re --value_lr $VALUE_LR \
      --settings_from "$D/results/${N}_sweep_static_re.json" --max_new_tokens $NEW_TOKENS --batch_size 50
  # stages 5-6 (measure_reward.py, metrics.py) for the draw's test runs in one process, base first
  runs=("${N}_base")
  for f in "$D"/response/${N}_*.json; do
    run=$(basename "$f" .json)
    case $run in *.meta|*_tune_*|${N}_base) continue;; esac
    runs+=("$run")
  done
  $PY scripts/score_runs.py "${COMMON[@]}" --reward_model "$REWARD" --baseline ${N}_base --embedding_model minilm \
      "${runs[@]}"
  $PY make_table.py "${COMMON[@]}"
  # the per-prompt files every reported figure is recomputed from, with the sweeps that chose the settings
  $PY scripts/export_per_prompt.py --output_dir "$D" --to "$PER_PROMPT/seed$seed"
  mkdir -p "$PER_PROMPT/seed$seed/sweeps"
  cp "$D"/results/${N}_sweep.json "$D"/results/${N}_sweep_static_re.json \
      "$PER_PROMPT/seed$seed/sweeps/"
  echo "=== draw seed $seed: $((SECONDS - start)) s"
  first=${first:-$D}
done
# the report, from the per-prompt files alone; the first draw is the demo's, so its sweeps are what scripts/demo.sh reads
# shellcheck disable=SC2086
$PY scripts/replicate_report.py --per_prompt "$PER_PROMPT" --out "$REPORT" $REPORT_FLAGS
for sweep in sweep sweep_static_re; do
  cp "$first"/results/${N}_$sweep.{json,md,png} results/
done
echo "replicate: $SECONDS s"
