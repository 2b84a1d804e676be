"""Stage 4: generate test responses, with RE-Control editing o_t uphill on the value model at every decoding step.

The paper's command line (GPU, hub access):
    python inference_intervention.py --model_name llama3_8B --dataset_name shp --use_intervention True \\
        --lr 1.0 --epochs 30 --value_lr 0.001

The embedded offline default, base and RE-Control:
    python inference_intervention.py --model_name smollm2_135M --dataset_name demo --use_intervention False
    python inference_intervention.py --model_name smollm2_135M --dataset_name demo --use_intervention True \\
        --value_lr 0.001 --lr 3.0 --epochs 10

Choosing alpha and n on a tuning split first (sweep.py), then reading the choice:
    python inference_intervention.py --use_intervention True --value_lr 0.001 \\
        --settings_from results/smollm2_135M_demo_sweep.json

--lr is the step size alpha, --epochs the number of updates n (the original's names; --step_size and --num_updates
are the same flags). Writes
response/{m}_{d}_{value_lr}_{epochs}_{lr}.json (RE-Control), response/{m}_{d}_base.json (no intervention);
a value model trained with other settings than the paper's adds them after {value_lr} (e.g. _td1_vf0.1_es, as its
file name does), and one passed by --value_model names the run by its file name;
--prompting True adds the paper's alignment prompt and '_prompting' to the name. Each file has a .meta.json beside
it with the settings and the wall time. The last line printed is 'run name: NAME'.
"""
from dataclasses import dataclass

from utils import cli
from utils.config import build, option
from utils.configs import DecodeConfig
from utils.decoding import get_method, options_from
from utils.stages.stage4_inference import RunNameSwitch, Stage4Args, run_stage4_script


@dataclass(frozen=True)
class InterventionSwitch(RunNameSwitch):
    use_intervention: bool = option(False, "edit hidden states with the value model (True/False)")


def build_parser():
    from utils.methods.plain import ReControlOptions
    return cli.build_parser(__doc__, DecodeConfig, InterventionSwitch, ReControlOptions,
                            exclude=("method", "reward_model"))


def parse_args(argv=None):
    """Stage4Args: RE-Control with --use_intervention True, else base (or Prompting)."""
    values = cli.parse(build_parser(), argv)
    method = {(False, False): "base", (False, True): "prompting", (True, False): "re_control",
              (True, True): "re_control_prompting"}[values["use_intervention"], values["prompting"]]
    config = build(DecodeConfig, values, method=method, prompting=False)
    return Stage4Args(config, options_from(get_method(method), values), values["print_run_name"])


def main(argv=None):
    run_stage4_script(parse_args(argv))


if __name__ == "__main__":
    cli.main_guard(main)
