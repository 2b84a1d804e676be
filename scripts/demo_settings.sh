# The demo's settings, shared by scripts/demo.sh and scripts/replicate.sh (sourced).
# the response length: a cost budget for a 2-core CPU, never compared on any split (docs/results.md)
NEW_TOKENS=40
# the value model's learning rate, chosen on the tuning split: the lowest tune loss of 1e-4, 3e-4, 1e-3 and 3e-3
# (scripts/choose_value_lr.py -> results/smollm2_135M_demo_value_lr.md; tests/test_committed_figures.py checks it)
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
# glibc's allocator keeps freed memory for reuse instead of unmapping and mapping it again at every decoding step:
# the same tokens; 0.967x the wall time of a 100-prompt decode in one paired measurement on an Intel host, 1.031x
# in bench/malloc_env.py on an AVX2 host (docs/speed.md): no saving shown
export MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296 MALLOC_TOP_PAD_=268435456
