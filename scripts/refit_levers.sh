#!/usr/bin/env bash
# Issue 20's on-policy refits on the TUNING split, by round. Stage 3 again with --rounds $ROUNDS in $OUT/refits_chain
# (round 1 retrains the run folder's value model, to the same weights; round r's rollouts are generated with round
# r-1's edit at the alpha and n the sweep chose for round 1). Each refit value model then gets its own sweep on the
# tuning split ($OUT/refit_sweeps/results/{m}_{d}_sweep_r{r}: alpha and n chosen for it by the same rule as round
# 1's; the sweeps share one folder, and so one base run, the run folder's where it has one), and its chosen setting
# is answered and scored in $OUT beside the option levers, so scripts/option_lever_table.py shows one row per round.
# The test split is not read.
#   bash scripts/refit_levers.sh                                  # the demo (after scripts/option_levers.sh)
#   FROM=runs/polar/seed0 OUT=runs/polar_option_levers DATASET=demo_polar REWARD=vader_polar \
#       bash scripts/refit_levers.sh                              # the prompt-dependent task
# ROUNDS (default 3), SEED (the draw's seed, default 0: the demo's), SWEEP_UPDATES (the refit sweeps' n grid, default
# the demo's 10,20; the committed tables used 10 alone, for time). Rollouts run on vLLM where it is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
FROM=${FROM:-runs/demo}
OUT=${OUT:-runs/option_levers}
DATASET=${DATASET:-demo}
REWARD=${REWARD:-vader}
ROUNDS=${ROUNDS:-3}
SEED=${SEED:-0}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=.venv/bin/python
N="smollm2_135M_$DATASET"
source scripts/demo_settings.sh
SWEEP=${SWEEP:-$FROM/results/${N}_sweep.json}
[ -f "$SWEEP" ] || SWEEP=results/${N}_sweep.json
read -r ALPHA UPDATES < <($PY -c "import json, sys; c = json.load(open(sys.argv[1]))['chosen']
print(c['step_size'], c['num_updates'])" "$SWEEP")
echo "=== refits: rounds 2..$ROUNDS with alpha $ALPHA, n $UPDATES (chosen for round 1 by $SWEEP)"
CHAIN="$OUT/refits_chain"
mkdir -p "$CHAIN"
cp -r "$FROM/features" "$CHAIN/"
# shellcheck disable=SC2086
$PY train_value_model.py --model_name smollm2_135M --dataset_name "$DATASET" --output_dir "$CHAIN" --lr $VALUE_LR \
    $VALUE_FLAGS --eval_split tune --seed "$SEED" --rounds "$ROUNDS" --refit_step_size "$ALPHA" \
    --refit_num_updates "$UPDATES"
TUNE=(--split tune --max_new_tokens $NEW_TOKENS --batch_size 50)
S="$OUT/refit_sweeps"
mkdir -p "$S/features" "$S/response" "$S/final_reward" "$S/evaluations"
cp "$FROM"/features/${N}_*_tune.* "$S/features/"
if [ -f "$FROM/response/${N}_tune_base.json" ]; then  # the run folder's sweep answered the tuning split's base
  for folder in response final_reward evaluations; do cp -n "$FROM/$folder"/${N}_tune_base.* "$S/$folder/"; done
fi
runs=()
for r in $(seq 2 "$ROUNDS"); do
  VM="$CHAIN/trained_model/value_model_${N}_${VALUE_TAG}_r${r}_ra$(printf '%g' "$ALPHA")_rn${UPDATES}"
  $PY sweep.py --model_name smollm2_135M --dataset_name "$DATASET" --output_dir "$S" --reward_model "$REWARD" \
      --value_model "$VM" --value_lr $VALUE_LR --step_sizes "$STEP_SIZES" --num_updates "${SWEEP_UPDATES:-$NUM_UPDATES}" --rule "$RULE" "${TUNE[@]}" \
      --embedding_model minilm --name "${N}_sweep_r$r"
  flags=(--model_name smollm2_135M --dataset_name "$DATASET" --output_dir "$OUT" "${TUNE[@]}" --use_intervention True
         --value_model "$VM" --settings_from "$S/results/${N}_sweep_r$r.json")
  $PY inference_intervention.py "${flags[@]}"
  runs+=("$($PY inference_intervention.py "${flags[@]}" --print_run_name True | tail -1)")
done
# stages 5-6 in one process, against the tuning split's base (option_levers.sh's, named as stage 4 names it)
$PY scripts/score_runs.py --model_name smollm2_135M --dataset_name "$DATASET" --output_dir "$OUT" \
    --reward_model "$REWARD" --baseline "${N}_base" --embedding_model minilm "${runs[@]}"
$PY scripts/option_lever_table.py --output_dir "$OUT" --dataset_name "$DATASET" --out "results/${N}_option_levers.md"
