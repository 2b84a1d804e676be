"""Base, Prompting, RE-Control and RE-Control + Prompting: greedy decoding, with the value-model edit for RE-Control.

RE-Control's control signal: before every token, n gradient steps of size alpha uphill on the value model from the
final-norm state o_t (utils.intervention.edit_states, shared by the HF hook and the vLLM engine).
"""
import dataclasses
from dataclasses import dataclass
from typing import Optional

from utils.config import nonnegative_float, nonnegative_int, option
from utils.decoding import PlainDecoding, register
from utils.engines import Edit
from utils.errors import UsageError
from utils.intervention import GATE_SIGNALS, Gate
from utils.paper import default_settings


class Base(PlainDecoding):
    name, label = "base", "Base"

    def run_part(self, _options, _value_tag):  # Prompting is {m}_{d}_prompting (names.run_name)
        return "base"


GATE_HELP = ("edit only where it matters: 'entropy' edits a row whose next-token entropy (nats, before the edit) "
             "is above --gate_threshold, 'value' one whose V(o_t) is below it (default: every row, the paper); the "
             "run's record says which fraction of the rows was edited")


@dataclass(frozen=True)
class ReControlOptions:
    step_size: Optional[float] = option(None, "step size alpha of each update (default: the paper's value for the "
                                        "setting; for smollm2_135M on demo, the tuning split's choice, 3.0)",
                                        flags=("--lr", "--step_size"), parse=nonnegative_float)
    num_updates: Optional[int] = option(None, "number of updates n per decoding step (default: the paper's value "
                                        "for the setting; 10 for smollm2_135M on demo)",
                                        flags=("--epochs", "--num_updates"), parse=nonnegative_int)
    gate: Optional[str] = option(None, GATE_HELP, choices=GATE_SIGNALS)
    gate_threshold: Optional[float] = option(None, "the gate's threshold tau (with --gate)")


class ReControl(PlainDecoding):
    name, label, Options, uses_value_model = "re_control", "RE-Control", ReControlOptions, True
    tuned, sweep_flags = ("num_updates", "step_size"), {"step_size": "step_sizes", "num_updates": "num_updates"}

    def run_part(self, options, value_tag):
        gate = f"_gate_{options.gate}{options.gate_threshold:g}" if options.gate else ""
        return f"{value_tag}_{options.num_updates}_{options.step_size}{gate}"

    def resolve(self, options, model_name, dataset_name):
        if (options.gate is None) != (options.gate_threshold is None):
            raise UsageError("pass --gate and --gate_threshold together (or neither: every row is edited)")
        if options.step_size is not None and options.num_updates is not None:
            return options
        step_size, num_updates = default_settings(model_name, dataset_name)
        return dataclasses.replace(options, step_size=step_size if options.step_size is None else options.step_size,
                                   num_updates=num_updates if options.num_updates is None else options.num_updates)

    def row_label(self, options):
        if options.get("step_size") is None:
            return self.label
        gate = (f", edited where {'entropy >' if options['gate'] == 'entropy' else 'V <'} {options['gate_threshold']}"
                if options.get("gate") else "")
        return f"{self.label} (α={options['step_size']}, n={options['num_updates']}{gate})"

    def edit(self, resources, options):
        gate = Gate(options.gate, options.gate_threshold) if options.gate else None
        return Edit(resources.value_model(), options.step_size, options.num_updates, gate, resources.edit_tally)


register(Base())
register(Base("prompting", "Prompting", prompting=True))
register(ReControl())
register(ReControl("re_control_prompting", "RE-Control + Prompting", prompting=True))
