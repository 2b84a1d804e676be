#!/usr/bin/env bash
# The embedded default end to end on CPU, offline: SmolLM2-135M-Instruct steered toward positive answers (VADER).
# Stages 1-6 on the demo prompts; ends with base vs RE-Control mean reward, paired difference and diversity.
# Outputs go to $OUT (default runs/demo). About 15 minutes on 2 cores, environment set-up included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=.venv/bin/python
OUT=${OUT:-runs/demo}
COMMON=(--model_name smollm2_135M --dataset_name demo --output_dir "$OUT")
NEW_TOKENS=40
VALUE_LR=0.0001

# 1. activations: 400 training prompts x 2 sampled responses, the 100 test prompts greedily
$PY get_activations_only.py "${COMMON[@]}" --splits train --limit 400 --num_samples 2 --max_new_tokens $NEW_TOKENS
$PY get_activations_only.py "${COMMON[@]}" --splits test --max_new_tokens $NEW_TOKENS
# 2. reward labels
$PY reward_label.py "${COMMON[@]}" --reward_model vader --mode train
$PY reward_label.py "${COMMON[@]}" --reward_model vader --mode test
# 3. value model
$PY train_value_model.py "${COMMON[@]}" --lr $VALUE_LR --epochs 60
# 4. base and RE-Control generation (step size and number of updates: the smollm2_135M/demo defaults)
$PY inference_intervention.py "${COMMON[@]}" --use_intervention False --max_new_tokens $NEW_TOKENS --batch_size 50
$PY inference_intervention.py "${COMMON[@]}" --use_intervention True --value_lr $VALUE_LR --max_new_tokens $NEW_TOKENS \
    --batch_size 50
RUN=$(ls -t "$OUT"/response/smollm2_135M_demo_${VALUE_LR}_*.json | grep -v meta.json | head -1 | xargs basename -s .json)
# 5-6. reward and diversity
$PY measure_reward.py "${COMMON[@]}" --out_file smollm2_135M_demo_base
$PY measure_reward.py "${COMMON[@]}" --out_file "$RUN" --baseline smollm2_135M_demo_base
$PY metrics.py --output_dir "$OUT" --run_name smollm2_135M_demo_base
$PY metrics.py --output_dir "$OUT" --run_name "$RUN"
$PY scripts/demo_summary.py --output_dir "$OUT" --base smollm2_135M_demo_base --run "$RUN" \
    --value_model "$OUT/trained_model/value_model_smollm2_135M_demo_${VALUE_LR}.json"
