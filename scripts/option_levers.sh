#!/usr/bin/env bash
# Issue 20's options on the TUNING split, at the setting the sweep chose for the run folder's value model: RE-Control
# without a gate, with a value gate (V(o_t) < tau) and with an entropy gate (entropy > tau nats) at a few tau, and
# RE-Control with a value model trained with Pref-CTRL's margin loss (the same flags plus --margin_weight, at the same
# alpha and n: not re-swept). The test split is not read. Then scripts/option_lever_table.py writes the table.
#   bash scripts/option_levers.sh                                 # the demo (after scripts/demo.sh)
#   FROM=runs/polar/seed0 OUT=runs/polar_option_levers DATASET=demo_polar REWARD=vader_polar \
#       bash scripts/option_levers.sh                             # the prompt-dependent task (after scripts/polar.sh)
# GATES: ';'-separated gates to try ('' = none; default ';value 0;value 0.25;value 0.5;entropy 1;entropy 2;entropy 3').
# SWEEP: the sweep result that chose alpha and n (default: $OUT/results/{m}_{d}_sweep.json, else results/'s).
# FROM: the run folder whose stage-1 features and value model are read (default runs/demo); they are copied to $OUT
# (default runs/option_levers), since stage 4 names a tuning-split run as it names the test split's.
set -euo pipefail
cd "$(dirname "$0")/.."
FROM=${FROM:-runs/demo}
OUT=${OUT:-runs/option_levers}
mkdir -p "$OUT"
cp -r "$FROM/features" "$FROM/trained_model" "$OUT/"
[ ! -d "$FROM/results" ] || cp -r "$FROM/results" "$OUT/"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=.venv/bin/python
DATASET=${DATASET:-demo}
REWARD=${REWARD:-vader}
N="smollm2_135M_$DATASET"
source scripts/demo_settings.sh
SWEEP=${SWEEP:-$OUT/results/${N}_sweep.json}
[ -f "$SWEEP" ] || SWEEP=results/${N}_sweep.json
COMMON=(--model_name smollm2_135M --dataset_name "$DATASET" --output_dir "$OUT")
TUNE=(--split tune --max_new_tokens $NEW_TOKENS --batch_size 50)
VM="$OUT/trained_model/value_model_${N}_${VALUE_LR}_td1_vf0.1_es"
$PY get_activations_only.py "${COMMON[@]}" --splits tune --max_new_tokens $NEW_TOKENS
$PY reward_label.py "${COMMON[@]}" --reward_model "$REWARD" --mode tune
$PY inference_intervention.py "${COMMON[@]}" "${TUNE[@]}" --use_intervention False
runs=("${N}_base")  # the tuning split's base, named as stage 4 names it; scored with the others at the end
IFS=';' read -r -a gates <<< "${GATES:-;value 0;value 0.25;value 0.5;entropy 1;entropy 2;entropy 3}"
for gate in "${gates[@]}"; do
  # shellcheck disable=SC2086
  flags=(--use_intervention True --value_model "$VM" --settings_from "$SWEEP" ${gate:+--gate ${gate% *} --gate_threshold ${gate#* }})
  $PY inference_intervention.py "${COMMON[@]}" "${TUNE[@]}" "${flags[@]}"
  runs+=("$($PY inference_intervention.py "${COMMON[@]}" "${TUNE[@]}" "${flags[@]}" --print_run_name True | tail -1)")
done
# Pref-CTRL's margin loss: the same training flags, plus the margin
# shellcheck disable=SC2086
$PY train_value_model.py "${COMMON[@]}" --lr $VALUE_LR $VALUE_FLAGS --eval_split tune --margin_weight 1.0
flags=(--use_intervention True --value_model "${VM}_pm1" --settings_from "$SWEEP" --allow_other_value_model True)
$PY inference_intervention.py "${COMMON[@]}" "${TUNE[@]}" "${flags[@]}"
runs+=("$($PY inference_intervention.py "${COMMON[@]}" "${TUNE[@]}" "${flags[@]}" --print_run_name True | tail -1)")
# stages 5-6 for every run in one process, each paired with the base
$PY scripts/score_runs.py "${COMMON[@]}" --reward_model "$REWARD" --baseline "${N}_base" --embedding_model minilm \
    "${runs[@]}"
$PY scripts/option_lever_table.py --output_dir "$OUT" --dataset_name "$DATASET" --out "results/${N}_option_levers.md"
