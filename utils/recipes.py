"""Presets: the stage command lines of one paper setting (recipes/*.py), printed with --dry_run or run in order."""
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from typing import List, Optional, Union

from utils import cli
from utils.names import value_model_stem

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the stage scripts' folder


@dataclass
class Setting:
    """One row group of the paper's Table 1: the policy, the data, the reward model, the value model and the edit."""
    model_name: str
    dataset_name: str
    reward_model: str
    num_layers: int          # Linear layers of the value model (3 for Vicuna/HH-RLHF, 2 elsewhere)
    value_lr: float          # Adam learning rate of the value model
    step_size: float         # alpha
    num_updates: int         # n
    reproduces: str          # the paper's numbers this recipe is meant to give
    hidden_dim: int = 4096
    epochs: int = 100
    max_new_tokens: int = 128


def stage4_names(model_name: str, dataset_name: str, output_dir: str, value_lr: float, step_size: float,
                 num_updates: int, value_model: Optional[str] = None) -> List[str]:
    """Base, RE-Control and RE-Control + Prompting, as stage 4 itself names them (utils.stages.stage4_inference)."""
    from utils.configs import DecodeConfig
    from utils.methods.plain import ReControlOptions
    from utils.stages.stage4_inference import plan_run
    names = []
    for method in ("base", "re_control", "re_control_prompting"):
        config = DecodeConfig(model_name=model_name, dataset_name=dataset_name, output_dir=output_dir, method=method,
                              value_lr=value_lr, value_model=value_model)
        names.append(plan_run(config, ReControlOptions(step_size, num_updates) if method != "base" else None).name)
    return names


def run_names(setting: Setting, output_dir: str = ".") -> List[str]:
    """Base, RE-Control and RE-Control + Prompting of a paper setting, as stage 4 names them."""
    return stage4_names(setting.model_name, setting.dataset_name, output_dir, setting.value_lr, setting.step_size,
                        setting.num_updates)


def commands(setting: Setting, python: str = "python", output_dir: str = ".", judge: bool = False,
             prefer_file: Optional[str] = None) -> List[List[str]]:
    """Stages 1-7 and the table, in order, each an argv list."""
    common = ["--model_name", setting.model_name, "--dataset_name", setting.dataset_name, "--output_dir", output_dir]
    reward = ["--reward_model", setting.reward_model]
    steer = ["--use_intervention", "True", "--value_lr", str(setting.value_lr), "--lr", str(setting.step_size),
             "--epochs", str(setting.num_updates), "--max_new_tokens", str(setting.max_new_tokens)]
    base, re_control, re_prompting = run_names(setting, output_dir)
    lines = [
        ["get_activations_only.py", *common, "--max_new_tokens", str(setting.max_new_tokens)],
        ["reward_label.py", *common, *reward, "--mode", "train"],
        ["reward_label.py", *common, *reward, "--mode", "test"],
        ["train_value_model.py", *common, "--lr", str(setting.value_lr), "--num_layers", str(setting.num_layers),
         "--hidden_dim", str(setting.hidden_dim), "--epochs", str(setting.epochs)],
        ["inference_intervention.py", *common, "--use_intervention", "False", "--max_new_tokens",
         str(setting.max_new_tokens)],
        ["inference_intervention.py", *common, *steer],
        ["inference_intervention.py", *common, *steer, "--prompting", "True"],
        ["measure_reward.py", *common, *reward, "--out_file", base],
    ]
    for run in (re_control, re_prompting):
        lines.append(["measure_reward.py", *common, *reward, "--out_file", run, "--baseline", base])
    for run in (base, re_control, re_prompting):
        lines.append(["metrics.py", "--output_dir", output_dir, "--run_name", run])
    if judge:  # against the data set's preferred answers when given (the paper), else against base
        for run in (base, re_control, re_prompting):
            if prefer_file or run != base:
                lines.append(["gpt4_eval.py", "--output_dir", output_dir, "--run_name_red", run, "--run_name_blue",
                              prefer_file or base])
    lines.append(["make_table.py", *common])
    return [[python, os.path.join(ROOT, line[0]), *line[1:]] for line in lines]


@dataclass
class OodSetting:
    """The paper's out-of-distribution experiment: the value model that another setting's recipe trains, applied to a
    test-only data set's prompts (HH-RLHF's value model on HarmfulQA). The paper reports only the judge's win rate
    against the base model's answers there, because the reward model is not reliable out of distribution."""
    trained: Setting         # the setting whose value model is reused, at its alpha and n
    dataset_name: str        # the out-of-distribution prompts
    reproduces: str

    @property
    def model_name(self) -> str:
        return self.trained.model_name


def ood_value_model(setting: OodSetting, output_dir: str = ".") -> str:
    """The trained setting's value model, under the name its recipe's stage 3 writes."""
    t = setting.trained
    return value_model_stem(output_dir, t.model_name, t.dataset_name, t.value_lr) + ".safetensors"


def ood_run_names(setting: OodSetting, output_dir: str = ".") -> List[str]:
    """Base, RE-Control and RE-Control + Prompting, as stage 4 names them: a value model of another data set is named
    by its file name."""
    t = setting.trained
    return stage4_names(setting.model_name, setting.dataset_name, output_dir, t.value_lr, t.step_size,
                        t.num_updates, ood_value_model(setting, output_dir))


def ood_commands(setting: OodSetting, python: str = "python", output_dir: str = ".", judge: bool = False,
                 prefer_file: Optional[str] = None) -> List[List[str]]:
    """The trained setting's stages 1-3 (skip them with --from_step 5 where its recipe already ran in output_dir),
    then stages 4-7 on the out-of-distribution prompts, each run judged against base, and the table."""
    if prefer_file:
        raise cli.UsageError("an out-of-distribution run is judged against the base model's answers (the paper): "
                             "drop --prefer_file")
    t = setting.trained
    common = ["--model_name", setting.model_name, "--dataset_name", setting.dataset_name, "--output_dir", output_dir]
    reward = ["--reward_model", t.reward_model]
    steer = ["--use_intervention", "True", "--value_model", ood_value_model(setting, output_dir), "--value_lr",
             str(t.value_lr), "--lr", str(t.step_size), "--epochs", str(t.num_updates)]
    tokens = ["--max_new_tokens", str(t.max_new_tokens)]
    base, re_control, re_prompting = ood_run_names(setting, output_dir)
    lines = [
        ["inference_intervention.py", *common, "--use_intervention", "False", *tokens],
        ["inference_intervention.py", *common, *steer, *tokens],
        ["inference_intervention.py", *common, *steer, *tokens, "--prompting", "True"],
        ["measure_reward.py", *common, *reward, "--out_file", base],
    ]
    for run in (re_control, re_prompting):
        lines.append(["measure_reward.py", *common, *reward, "--out_file", run, "--baseline", base])
    for run in (base, re_control, re_prompting):
        lines.append(["metrics.py", "--output_dir", output_dir, "--run_name", run])
    if judge:
        for run in (re_control, re_prompting):
            lines.append(["gpt4_eval.py", "--output_dir", output_dir, "--run_name_red", run, "--run_name_blue", base])
    lines.append(["make_table.py", *common])
    trained = commands(t, python, output_dir)[:4]  # stage 1, stage 2 (train, test), stage 3
    return trained + [[python, os.path.join(ROOT, line[0]), *line[1:]] for line in lines]


def main(setting: Union[Setting, "OodSetting"], doc: str, argv: Optional[List[str]] = None) -> None:
    """A recipe's command line: print the stage commands (--dry_run True) or run them, stopping at the first error."""
    parser = cli.make_parser(doc)
    parser.add_argument("--dry_run", type=cli.str2bool, default=False,
                        help="print the stage commands this recipe runs, and run nothing")
    parser.add_argument("--output_dir", type=str, default=".", help="passed to every stage")
    parser.add_argument("--python", type=str, default=sys.executable, help="the interpreter that runs each stage")
    parser.add_argument("--judge", type=cli.str2bool, default=False,
                        help="run stage 7 (needs OPENAI_API_KEY or an OpenAI-compatible server; costs money)")
    parser.add_argument("--prefer_file", type=str, default=None,
                        help="stage 7's reference: the data set's preferred answers as [{'prefer': text}] (the "
                             "paper's dataset_prefer.json); without it each run is judged against base")
    parser.add_argument("--from_step", type=cli.positive_int, default=1,
                        help="start at this step (the numbers the recipe prints), e.g. after fixing a failed one")
    args = parser.parse_args(argv)
    build = ood_commands if isinstance(setting, OodSetting) else commands
    lines = build(setting, args.python, args.output_dir, args.judge, args.prefer_file)
    print(f"# {setting.model_name} / {setting.dataset_name}: reproduces {setting.reproduces}")
    for number, line in enumerate(lines, 1):
        print(f"{number:2d}. {shlex.join(line)}")
    if args.dry_run:
        return
    for number, line in enumerate(lines[args.from_step - 1:], args.from_step):
        print(f"\n[{number}/{len(lines)}] {shlex.join(line)}", flush=True)
        code = subprocess.call(line)
        if code:
            raise cli.UsageError(f"step {number} failed (exit {code}); fix its cause and run the recipe again with "
                                 f"--from_step {number} (its finished batches are kept)")
