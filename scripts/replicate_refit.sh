#!/usr/bin/env bash
# RE-Control with one on-policy refit (stage 3 --rounds 2) over the replicate's K draws, on the TEST split. Run after
# the replicate itself (scripts/polar.sh or scripts/replicate.sh), whose draw folders it reads ($FROM/seed*). Per draw,
# in $OUT/seed*: stage 3 with --rounds 2 (round 1 retrains the draw's value model, to the same weights; round 2's
# rollouts use round 1's edit at the alpha and n the draw's sweep chose for it), a sweep of the refit value model on
# the tuning split (alpha over the demo's grid at n = $SWEEP_UPDATES), its chosen setting on the test split, stages
# 5-6 against the draw's base, and the per-prompt file and sweep added to the draw's per-prompt folder, where
# scripts/replicate_report.py reports "RE-Control (refit)" beside the other methods.
#   bash scripts/replicate_refit.sh                                          # the prompt-dependent task
#   FROM=runs/replicate OUT=runs/replicate_refit DATASET=demo REWARD=vader PER_PROMPT=results/per_prompt/replicate \
#       REPORT_FLAGS= bash scripts/replicate_refit.sh                       # the demo
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=.venv/bin/python
FROM=${FROM:-runs/polar}
OUT=${OUT:-runs/polar_refit}
DATASET=${DATASET:-demo_polar}
REWARD=${REWARD:-vader_polar}
PER_PROMPT=${PER_PROMPT:-results/per_prompt/polar}
REPORT_FLAGS=${REPORT_FLAGS---first_untouched 1 --group_by polarity}
SEEDS=${SEEDS:-"0 1 2 3 4"}
SWEEP_UPDATES=${SWEEP_UPDATES:-10}
N="smollm2_135M_$DATASET"
source scripts/demo_settings.sh
for seed in $SEEDS; do
  D="$FROM/seed$seed"
  C="$OUT/seed$seed"
  COMMON=(--model_name smollm2_135M --dataset_name "$DATASET" --output_dir "$C")
  echo "=== refit draw: seed $seed -> $C"
  start=$SECONDS
  mkdir -p "$C/response" "$C/final_reward" "$C/evaluations"
  cp -r "$D/features" "$C/"
  for folder in response final_reward evaluations; do  # the draw's base on the test split, for stage 5's pairs
    cp "$D/$folder"/${N}_base.* "$C/$folder/"
  done
  read -r ALPHA UPDATES < <($PY -c "import json, sys; c = json.load(open(sys.argv[1]))['chosen']
print(c['step_size'], c['num_updates'])" "$D/results/${N}_sweep.json")
  # shellcheck disable=SC2086
  $PY train_value_model.py "${COMMON[@]}" --lr $VALUE_LR $VALUE_FLAGS --eval_split tune --seed "$seed" --rounds 2 \
      --refit_step_size "$ALPHA" --refit_num_updates "$UPDATES"
  SEED_TAG=""  # stage 3 names a seed other than 0 (_s1, ...)
  [ "$seed" = 0 ] || SEED_TAG="_s$seed"
  VM="$C/trained_model/value_model_${N}_${VALUE_TAG}${SEED_TAG}_r2_ra$(printf '%g' "$ALPHA")_rn${UPDATES}"
  $PY sweep.py "${COMMON[@]}" --reward_model "$REWARD" --split tune --value_model "$VM" --step_sizes "$STEP_SIZES" \
      --num_updates "$SWEEP_UPDATES" --rule "$RULE" --max_new_tokens $NEW_TOKENS --batch_size 50 \
      --embedding_model minilm
  flags=("${COMMON[@]}" --use_intervention True --value_model "$VM" --settings_from "$C/results/${N}_sweep.json"
         --max_new_tokens $NEW_TOKENS --batch_size 50)
  $PY inference_intervention.py "${flags[@]}"
  run=$($PY inference_intervention.py "${flags[@]}" --print_run_name True | tail -1)
  $PY measure_reward.py "${COMMON[@]}" --reward_model "$REWARD" --out_file "$run" --baseline ${N}_base
  $PY metrics.py --output_dir "$C" --run_name "$run" --embedding_model minilm
  rm -rf "$C/export"
  $PY scripts/export_per_prompt.py --output_dir "$C" --to "$C/export"
  cp "$C/export/$run.json" "$PER_PROMPT/seed$seed/"
  cp "$C/results/${N}_sweep.json" "$PER_PROMPT/seed$seed/sweeps/${N}_sweep_refit.json"
  echo "=== refit draw seed $seed: $((SECONDS - start)) s"
done
# shellcheck disable=SC2086
$PY scripts/replicate_report.py --per_prompt "$PER_PROMPT" --out "results/${N}_replicate" $REPORT_FLAGS
echo "replicate refit: $SECONDS s"
