"""Base, Prompting, RE-Control and RE-Control + Prompting: greedy decoding, with the value-model edit for RE-Control.

RE-Control's control signal: before every token, n gradient steps of size alpha uphill on the value model from the
final-norm state o_t (utils.intervention.edit_states, shared by the HF hook and the vLLM engine).
"""
from dataclasses import dataclass
from typing import Optional

from utils.config import nonnegative_float, nonnegative_int, option
from utils.decoding import PlainDecoding, register
from utils.engines import Edit
from utils.paper import default_settings


class Base(PlainDecoding):
    name, label = "base", "Base"

    def run_part(self, _options, _value_tag):  # Prompting is {m}_{d}_prompting (names.run_name)
        return "base"


@dataclass(frozen=True)
class ReControlOptions:
    step_size: Optional[float] = option(None, "step size alpha of each update (default: the paper's value for the "
                                        "setting; for smollm2_135M on demo, the tuning split's choice, 3.0)",
                                        flags=("--lr", "--step_size"), parse=nonnegative_float)
    num_updates: Optional[int] = option(None, "number of updates n per decoding step (default: the paper's value "
                                        "for the setting; 10 for smollm2_135M on demo)",
                                        flags=("--epochs", "--num_updates"), parse=nonnegative_int)


class ReControl(PlainDecoding):
    name, label, Options, uses_value_model = "re_control", "RE-Control", ReControlOptions, True
    tuned, sweep_flags = ("num_updates", "step_size"), {"step_size": "step_sizes", "num_updates": "num_updates"}

    def run_part(self, options, value_tag):
        return f"{value_tag}_{options.num_updates}_{options.step_size}"

    def resolve(self, options, model_name, dataset_name):
        if options.step_size is not None and options.num_updates is not None:
            return options
        step_size, num_updates = default_settings(model_name, dataset_name)
        return ReControlOptions(step_size if options.step_size is None else options.step_size,
                                num_updates if options.num_updates is None else options.num_updates)

    def row_label(self, options):
        if options.get("step_size") is None:
            return self.label
        return f"{self.label} (α={options['step_size']}, n={options['num_updates']})"

    def edit(self, resources, options):
        return Edit(resources.value_model(), options.step_size, options.num_updates)


register(Base())
register(Base("prompting", "Prompting", prompting=True))
register(ReControl())
register(ReControl("re_control_prompting", "RE-Control + Prompting", prompting=True))
