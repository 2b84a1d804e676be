#!/usr/bin/env bash
# RE-Control with one of issue 20's options over the replicate's K draws, on the TEST split. Run after the replicate
# itself (scripts/polar.sh or scripts/replicate.sh), whose draw folders it reads ($FROM/seed*). Per draw, in
# $OUT/seed*, by OPTION:
#   refit         stage 3 with --rounds 2 (round 1 retrains the draw's value model, to the same weights; round 2's
#                 rollouts use round 1's edit at the alpha and n the draw's sweep chose for it), then a sweep of the
#                 refit value model on the tuning split (alpha over the demo's grid at n = $SWEEP_UPDATES);
#   margin        stage 3 with Pref-CTRL's margin loss (--margin_weight $MARGIN_WEIGHT, the draw's other flags and
#                 seed), then a sweep of that value model as for refit;
#   entropy_gate  the draw's value model at the alpha and n its sweep chose, edits only where the next-token
#   value_gate    entropy > $TAU nats (default 2), or where V(o_t) < $TAU (default 0): the tau of the lever table,
#                 a fixed value, not swept;
# then the chosen setting on the test split, stages 5-6 against the draw's base, and the per-prompt file (and sweep)
# added to the draw's per-prompt folder, where scripts/replicate_report.py reports "RE-Control (<option>)" beside the
# other methods ($REPORT.{md,json}, default results/smollm2_135M_$DATASET_replicate).
#   OPTION=refit bash scripts/replicate_options.sh                          # the prompt-dependent task
#   OPTION=entropy_gate bash scripts/replicate_options.sh
#   OPTION=refit FROM=runs/replicate OUT=runs/replicate_refit DATASET=demo REWARD=vader \
#       PER_PROMPT=results/per_prompt/replicate REPORT_FLAGS= bash scripts/replicate_options.sh   # the demo
set -euo pipefail
cd "$(dirname "$0")/.."
case ${OPTION:-} in
  refit|margin|entropy_gate|value_gate) ;;
  *) echo "error: set OPTION to refit, margin, entropy_gate or value_gate (got '${OPTION:-}')" >&2; exit 2;;
esac
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=.venv/bin/python
FROM=${FROM:-runs/polar}
OUT=${OUT:-runs/polar_$OPTION}
DATASET=${DATASET:-demo_polar}
REWARD=${REWARD:-vader_polar}
PER_PROMPT=${PER_PROMPT:-results/per_prompt/polar}
REPORT_FLAGS=${REPORT_FLAGS---first_untouched 1 --group_by polarity}
SEEDS=${SEEDS:-"0 1 2 3 4"}
SWEEP_UPDATES=${SWEEP_UPDATES:-10}
MARGIN_WEIGHT=${MARGIN_WEIGHT:-1}
case $OPTION in entropy_gate) TAU=${TAU:-2};; value_gate) TAU=${TAU:-0};; esac
N="smollm2_135M_$DATASET"
REPORT=${REPORT:-results/${N}_replicate}  # its .md and .json
source scripts/demo_settings.sh
for seed in $SEEDS; do
  D="$FROM/seed$seed"
  C="$OUT/seed$seed"
  COMMON=(--model_name smollm2_135M --dataset_name "$DATASET" --output_dir "$C")
  echo "=== $OPTION draw: seed $seed -> $C"
  start=$SECONDS
  mkdir -p "$C/response" "$C/final_reward" "$C/evaluations"
  cp -r "$D/features" "$C/"
  for folder in response final_reward evaluations; do  # the draw's base on the test split, for stage 5's pairs,
    cp "$D/$folder"/${N}_base.* "$D/$folder"/${N}_tune_base.* "$C/$folder/"  # and on the tuning split, for the sweep
  done
  read -r ALPHA UPDATES < <($PY -c "import json, sys; c = json.load(open(sys.argv[1]))['chosen']
print(c['step_size'], c['num_updates'])" "$D/results/${N}_sweep.json")
  SEED_TAG=""  # stage 3 names a seed other than 0 (_s1, ...)
  [ "$seed" = 0 ] || SEED_TAG="_s$seed"
  SETTINGS="$C/results/${N}_sweep.json"  # the sweep of the value model the option trains
  extra=()
  case $OPTION in
    refit)
      # shellcheck disable=SC2086
      $PY train_value_model.py "${COMMON[@]}" --lr $VALUE_LR $VALUE_FLAGS --eval_split tune --seed "$seed" \
          --rounds 2 --refit_step_size "$ALPHA" --refit_num_updates "$UPDATES"
      VM="$C/trained_model/value_model_${N}_${VALUE_TAG}${SEED_TAG}_r2_ra$(printf '%g' "$ALPHA")_rn${UPDATES}";;
    margin)
      # shellcheck disable=SC2086
      $PY train_value_model.py "${COMMON[@]}" --lr $VALUE_LR $VALUE_FLAGS --eval_split tune --seed "$seed" \
          --margin_weight "$MARGIN_WEIGHT"
      VM="$C/trained_model/value_model_${N}_${VALUE_TAG}_pm$(printf '%g' "$MARGIN_WEIGHT")${SEED_TAG}";;
    *_gate)
      cp -r "$D/trained_model" "$C/"
      VM="$C/trained_model/value_model_${N}_${VALUE_TAG}${SEED_TAG}"
      SETTINGS="$D/results/${N}_sweep.json"  # the draw's own sweep chose alpha and n for this value model
      extra=(--gate "${OPTION%_gate}" --gate_threshold "$TAU");;
  esac
  if [ "$SETTINGS" != "$D/results/${N}_sweep.json" ]; then
    $PY sweep.py "${COMMON[@]}" --reward_model "$REWARD" --split tune --value_model "$VM" --value_lr $VALUE_LR \
        --step_sizes "$STEP_SIZES" --num_updates "$SWEEP_UPDATES" --rule "$RULE" --max_new_tokens $NEW_TOKENS \
        --batch_size 50 --embedding_model minilm
  fi
  flags=("${COMMON[@]}" --use_intervention True --value_model "$VM" --settings_from "$SETTINGS"
         --max_new_tokens $NEW_TOKENS --batch_size 50 "${extra[@]}")
  $PY inference_intervention.py "${flags[@]}"
  run=$($PY inference_intervention.py "${flags[@]}" --print_run_name True | tail -1)
  $PY scripts/score_runs.py "${COMMON[@]}" --reward_model "$REWARD" --baseline ${N}_base --embedding_model minilm \
      "$run"
  rm -rf "$C/export"
  $PY scripts/export_per_prompt.py --output_dir "$C" --to "$C/export"
  cp "$C/export/$run.json" "$PER_PROMPT/seed$seed/"
  [ "$SETTINGS" = "$D/results/${N}_sweep.json" ] || cp "$SETTINGS" "$PER_PROMPT/seed$seed/sweeps/${N}_sweep_$OPTION.json"
  echo "=== $OPTION draw seed $seed: $((SECONDS - start)) s"
done
# shellcheck disable=SC2086
$PY scripts/replicate_report.py --per_prompt "$PER_PROMPT" --out "$REPORT" $REPORT_FLAGS
echo "replicate $OPTION: $SECONDS s"
