"""Each stage as a function of its config (utils/configs.py): the scripts at the top parse flags into a config and
call these; sweep.py, compare_methods.py and utils/recipes.py build configs and call them too.

    run_get_activations(config, model=None, tokenizer=None)       stage 1   get_activations_only.py (ActivationsConfig)
    run_reward_label(config, reward_model=None)                   stage 2   reward_label.py (RewardLabelConfig)
    run_train_value_model(config)                                 stage 3   train_value_model.py (ValueModelConfig)
    run_decode(config, options, engine=None, resources=None)      stage 4   inference_intervention.py and
                                                                            decode_methods.py (DecodeConfig and the
                                                                            method's options: utils.decoding)
    run_measure_reward(config, reward_model=None)                 stage 5   measure_reward.py (MeasureRewardConfig)
    run_metrics(config, encoder=None)                             stage 6   metrics.py (MetricsConfig)
    run_gpt4_eval(config, client=None)                            stage 7   gpt4_eval.py (JudgeConfig)
    run_finetune_baseline(config, model=None, tokenizer=None)     LoRA DPO / RLOO baselines: finetune_baseline.py

A config is frozen: a function that resolves a default makes a copy (dataclasses.replace). A model passed in is used
as it is (compare_methods.py and sweep.py load each model once per process); otherwise the function loads it. Each
returns what names its output (a run name or a path); stages 1, 4, 5 and 6 skip a run already written with the same
settings.
"""
