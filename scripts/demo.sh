#!/usr/bin/env bash
# The embedded default end to end on CPU, offline: SmolLM2-135M-Instruct steered toward positive answers (VADER).
# Stages 1-7 on the demo prompts; ends with the results table: base vs RE-Control reward (paired difference),
# diversity, coherence and time. The judge (stage 7) runs only if OPENAI_API_KEY or JUDGE_BASE_URL is set.
# Outputs go to $OUT (default runs/demo). About 15 minutes on 2 cores, environment set-up included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=.venv/bin/python
OUT=${OUT:-runs/demo}
COMMON=(--model_name smollm2_135M --dataset_name demo --output_dir "$OUT")
NEW_TOKENS=40
VALUE_LR=0.001

# 1. activations: 400 training prompts x 2 sampled responses, the 100 test prompts greedily
$PY get_activations_only.py "${COMMON[@]}" --splits train --limit 400 --num_samples 2 --max_new_tokens $NEW_TOKENS
$PY get_activations_only.py "${COMMON[@]}" --splits test --max_new_tokens $NEW_TOKENS
# 2. reward labels
$PY reward_label.py "${COMMON[@]}" --reward_model vader --mode train
$PY reward_label.py "${COMMON[@]}" --reward_model vader --mode test
# 3. value model
$PY train_value_model.py "${COMMON[@]}" --lr $VALUE_LR --epochs 60
# 4. base and RE-Control generation: step size (--lr) 8.0 and 20 updates (--epochs), the smollm2_135M/demo defaults
$PY inference_intervention.py "${COMMON[@]}" --use_intervention False --max_new_tokens $NEW_TOKENS --batch_size 50
$PY inference_intervention.py "${COMMON[@]}" --use_intervention True --value_lr $VALUE_LR --lr 8.0 --epochs 20 \
    --max_new_tokens $NEW_TOKENS --batch_size 50
RUN=smollm2_135M_demo_${VALUE_LR}_20_8.0
# 5-6. reward, diversity and coherence (SimCSE's BERT is on the hub: the MiniLM folder from PyPI stands in)
$PY measure_reward.py "${COMMON[@]}" --out_file smollm2_135M_demo_base
$PY measure_reward.py "${COMMON[@]}" --out_file "$RUN" --baseline smollm2_135M_demo_base
for run in smollm2_135M_demo_base "$RUN"; do
  $PY metrics.py --output_dir "$OUT" --run_name "$run" --embedding_model minilm
done
# 7. the paid judge, only when one is configured (JUDGE_BASE_URL: any OpenAI-compatible server)
if [ -n "${OPENAI_API_KEY:-}" ] || [ -n "${JUDGE_BASE_URL:-}" ]; then
  $PY gpt4_eval.py --output_dir "$OUT" --run_name_red "$RUN" --run_name_blue smollm2_135M_demo_base \
      ${JUDGE_BASE_URL:+--base_url "$JUDGE_BASE_URL"} ${JUDGE_MODEL:+--judge_model "$JUDGE_MODEL"}
fi
$PY make_table.py "${COMMON[@]}"
