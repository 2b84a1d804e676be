#!/usr/bin/env bash
# The value-model lever table (issue 10): each lever trained on the same stage-1/2 outputs (the demo's draw) and
# swept on the TUNING split (alpha in STEP_SIZES, n = 20); the test split is not read at all.
# Needs stages 1-2 of scripts/demo.sh in $OUT first (default runs/demo). The rollouts lever runs stage 1 again with
# 4 sampled responses per prompt into $OUT_K4 (default runs/demo_rollouts4, about 8 minutes).
# Writes $OUT/results/*_sweep_lever_*.json and results/smollm2_135M_demo_levers.md (the table in docs/results.md).
# About 35 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=.venv/bin/python
OUT=${OUT:-runs/demo}
STEP_SIZES=${STEP_SIZES:-1,2,4,8}
COMMON=(--model_name smollm2_135M --dataset_name demo --output_dir "$OUT")
# the tuning split's greedy answers and labels: the loss each value model reports (no choice reads the test split)
$PY get_activations_only.py "${COMMON[@]}" --splits tune --max_new_tokens 40
$PY reward_label.py "${COMMON[@]}" --reward_model vader --mode tune
EVAL=(--eval_split tune --overwrite True)
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
# more rollouts: 4 sampled responses per training prompt instead of 2 (the same 400 prompts), the best lever above
OUT_K4=${OUT_K4:-runs/demo_rollouts4}
K4=(--model_name smollm2_135M --dataset_name demo --output_dir "$OUT_K4")
$PY get_activations_only.py "${K4[@]}" --splits train --limit 400 --num_samples 4 --max_new_tokens 40
$PY get_activations_only.py "${K4[@]}" --splits tune --max_new_tokens 40
for mode in train tune; do $PY reward_label.py "${K4[@]}" --reward_model vader --mode $mode; done
vm="$OUT/trained_model/lever_mc_early_stop_rollouts_4"
$PY train_value_model.py "${K4[@]}" "${EVAL[@]}" --lr 0.001 --td_lambda 1 "${ES[@]}" --value_model "$vm" --num_threads 2
$PY sweep.py "${COMMON[@]}" --split tune --value_model "$vm" --step_sizes "$STEP_SIZES" --num_updates 20 \
    --max_new_tokens 40 --batch_size 50 --embedding_model minilm --name "smollm2_135M_demo_sweep_lever_mc_early_stop_rollouts_4"
$PY scripts/lever_table.py --output_dir "$OUT" --out results/smollm2_135M_demo_levers.md
