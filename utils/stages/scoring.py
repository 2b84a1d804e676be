"""Stages 5 and 6 for several runs of one folder, with the reward model and the sentence encoder loaded once."""
from utils.config import build
from utils.configs import MeasureRewardConfig, MetricsConfig
from utils.metrics import load_encoder
from utils.rewards import load_reward_model
from utils.stages.stage5_reward import run_measure_reward
from utils.stages.stage6_metrics import run_metrics


def score_runs(runs, baseline, reward_values, metrics_values, reward_model=None, encoder=None):
    """run_measure_reward and run_metrics for each run in order, as measure_reward.py and metrics.py would run them
    with these values (dicts of MeasureRewardConfig and MetricsConfig fields; out_file, run_name and baseline are set
    here). Every run but `baseline` itself gets the paired difference to `baseline` (None: no pairs), so list it
    first. A model not given is loaded once, from the first run's config."""
    reward_configs = [build(MeasureRewardConfig, reward_values, out_file=run,
                            baseline=None if run == baseline else baseline) for run in runs]
    metrics_configs = [build(MetricsConfig, metrics_values, run_name=run) for run in runs]
    if not runs:
        return
    first = reward_configs[0]
    reward_model = reward_model or load_reward_model(first.reward_model, first.device, first.dtype, first.batch_size,
                                                     first.trust_remote_code)
    encoder = encoder or load_encoder(metrics_configs[0].embedding_model, metrics_configs[0].device)
    for reward_config, metrics_config in zip(reward_configs, metrics_configs):
        run_measure_reward(reward_config, reward_model)
        run_metrics(metrics_config, encoder)
