# The demo's settings, shared by scripts/demo.sh and scripts/replicate.sh (sourced).
NEW_TOKENS=40
VALUE_LR=0.001
# the value-model levers chosen on the tuning split (scripts/levers.sh; docs/results.md, "Value-model levers")
VALUE_FLAGS="--td_lambda 1 --val_fraction 0.1 --early_stopping True --epochs 100"
# what names the value model and the RE-Control runs: the lr and the settings that differ from the paper's
# (trained_model/value_model_smollm2_135M_demo_$VALUE_TAG; tests/test_recipes.py checks it against stage 3)
VALUE_TAG=${VALUE_LR}_td1_vf0.1_es
# the grids that sweep.py searches on the tuning split, and the rule that picks a cell
STEP_SIZES=1,2,3,4,6
NUM_UPDATES=10,20
STRENGTHS=1,2,4,6,8,12
RULE=paper
