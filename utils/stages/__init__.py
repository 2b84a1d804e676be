"""Each stage as a function of its parsed flags: the scripts at the top parse the flags and call these.

    run_get_activations(args, model=None, tokenizer=None)         stage 1   get_activations_only.py
    run_reward_label(args, reward_model=None)                     stage 2   reward_label.py
    run_train_value_model(args)                                   stage 3   train_value_model.py
    run_inference_intervention(args, model=None, tokenizer=None)  stage 4   inference_intervention.py
    run_decode_method(args, model=None, tokenizer=None)           stage 4's comparison methods: decode_methods.py
    run_measure_reward(args, reward_model=None)                   stage 5   measure_reward.py
    run_metrics(args, encoder=None)                               stage 6   metrics.py
    run_gpt4_eval(args, client=None)                              stage 7   gpt4_eval.py
    run_finetune_baseline(args, model=None, tokenizer=None)       LoRA DPO / RLOO baselines: finetune_baseline.py

A model passed in is used as it is (compare_methods.py and sweep.py load each model once per process); otherwise
the function loads it from the flags. Each returns what names its output (a run name or a path).
"""
