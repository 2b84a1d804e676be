#!/usr/bin/env bash
# The value-model lever table (issue 10): each lever trained on the same stage-1/2 outputs (the demo's draw) and
# swept on the TUNING split (alpha in STEP_SIZES, n = 20), never on the test split.
# Needs stages 1-2 of scripts/demo.sh in $OUT first (default runs/demo). Writes $OUT/results/*_sweep_lever_*.json
# and results/smollm2_135M_demo_levers.md (the table in the README).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=.venv/bin/python
OUT=${OUT:-runs/demo}
STEP_SIZES=${STEP_SIZES:-1,2,4,8}
COMMON=(--model_name smollm2_135M --dataset_name demo --output_dir "$OUT")
EVAL=(--eval_split "${EVAL_SPLIT:-test}")
ES=(--val_fraction 0.1 --early_stopping True --epochs 100)
# name | stage-3 flags (lr 1e-3 for all)
LEVERS=(
  "paper_td0|--epochs 60"
  "td0_early_stop|${ES[*]}"
  "mc|--td_lambda 1 --epochs 60"
  "mc_early_stop|--td_lambda 1 ${ES[*]}"
  "td_lambda_0.9_early_stop|--td_lambda 0.9 ${ES[*]}"
  "mc_early_stop_standardized|--td_lambda 1 ${ES[*]} --standardize_rewards True"
  "mc_early_stop_width_2048|--td_lambda 1 ${ES[*]} --hidden_dim 2048"
  "mc_early_stop_3_layers|--td_lambda 1 ${ES[*]} --num_layers 3"
  "mc_early_stop_weight_decay|--td_lambda 1 ${ES[*]} --weight_decay 0.01"
)
for lever in "${LEVERS[@]}"; do
  name=${lever%%|*}; flags=${lever#*|}
  vm="$OUT/trained_model/lever_$name"
  # shellcheck disable=SC2086
  $PY train_value_model.py "${COMMON[@]}" "${EVAL[@]}" --lr 0.001 $flags --value_model "$vm" --num_threads 2
  $PY sweep.py "${COMMON[@]}" --split tune --value_model "$vm" --step_sizes "$STEP_SIZES" --num_updates 20 \
      --max_new_tokens 40 --batch_size 50 --embedding_model minilm --name "smollm2_135M_demo_sweep_lever_$name"
done
$PY scripts/lever_table.py --output_dir "$OUT" --out results/smollm2_135M_demo_levers.md
