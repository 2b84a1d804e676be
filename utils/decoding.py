"""The registry of decoding methods: what stage 4 (inference_intervention.py, decode_methods.py), sweep.py,
compare_methods.py, make_table.py and utils.api.generate run.

A method is one class in one file (see docs/extending.md):

    @dataclass(frozen=True)
    class MyOptions:
        weight: float = option(1.0, "my method: the weight of ...", parse=nonnegative_float)

    class MyMethod(DecodingMethod):
        name, label, Options, engines, tuned = "my_method", "My method", MyOptions, ("hf",), ("weight",)

        def run_part(self, options, value_tag):
            return f"my_method_{options.weight}"

        @contextlib.contextmanager
        def session(self, resources, options):
            def decode_batch(texts, conversations):
                return resources.engine.decode(texts, resources.max_new_tokens)
            yield decode_batch

    register(MyMethod())

Its options become flags of decode_methods.py, sweep.py (`--grid weight=0.5,1`) and compare_methods.py.
"""
import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Dict, Iterator, List, Optional, Sequence, Tuple

from utils.engines import ENGINES, Engine, Rows
from utils.errors import UsageError

DecodeBatch = Callable[[Sequence[str], Sequence[str]], Rows]  # (texts, conversations) -> (responses, results)


@dataclass(frozen=True)
class NoOptions:
    """A method without options of its own."""


@dataclass
class Resources:
    """What a method may read while it decodes, loaded on first use and kept (compare_methods.py shares one set
    between all its methods): the engine, the value model, the reward model and the training split's probe."""
    engine: Engine
    max_new_tokens: int
    use_cache: bool = True
    sampling: Any = None                 # a utils.engines.Sampling for sampled plain decoding (the Python API)
    value_model_stem: Optional[str] = None
    load_reward_model: Optional[Callable[[], Any]] = None
    load_probe_direction: Optional[Callable[[], Any]] = None
    loaded_value_model: Any = None
    loaded_reward_model: Any = None
    loaded_direction: Any = None
    edit_tally: Optional[dict] = None  # a gated edit's count (utils.intervention.new_tally()), filled while decoding

    def use_value_model(self, stem: str) -> None:
        """Read the value model from `stem` on first use; one already loaded from it is kept (not read again)."""
        if stem != self.value_model_stem:
            self.value_model_stem, self.loaded_value_model = stem, None

    def value_model(self):
        if self.loaded_value_model is None:
            from utils.value_model import load_value_model
            if self.value_model_stem is None:
                raise UsageError("this method needs a value model: pass --value_lr or --value_model")
            self.loaded_value_model = load_value_model(self.value_model_stem)
        return self.loaded_value_model

    def reward_model(self):
        if self.loaded_reward_model is None:
            if self.load_reward_model is None:
                raise UsageError("this method needs a reward model (--reward_model)")
            self.loaded_reward_model = self.load_reward_model()
        return self.loaded_reward_model

    def probe_direction(self):
        if self.loaded_direction is None:
            if self.load_probe_direction is None:
                raise UsageError("this method needs the training split's features and labels (stages 1-2)")
            self.loaded_direction = self.load_probe_direction()
        return self.loaded_direction


class DecodingMethod:
    """One test-time method. Subclasses set the class attributes and implement session(); a variant of a method
    (e.g. with the alignment prompt) is the same class built with another name, label and prompting."""
    name: str = ""                       # registry key, --method value, and what .meta.json records
    label: str = ""                      # the results table's row name
    Options: type = NoOptions            # a frozen dataclass of the method's own flags (utils.config.option)
    engines: Tuple[str, ...] = ENGINES   # the engines it runs on
    prompting: bool = False              # prepend the paper's alignment prompt
    uses_value_model: bool = False       # needs the stage-3 value model (its tag names the run)
    uses_reward_model: bool = False      # needs the reward model while decoding
    uses_probe: bool = False             # needs the linear probe of the training split (stages 1-2)
    tuned: Tuple[str, ...] = ()          # options a sweep searches, outermost first
    sweep_flags: Dict[str, str] = {}     # sweep.py's list flag for a tuned option, e.g. {"strength": "strengths"}

    def __init__(self, name: Optional[str] = None, label: Optional[str] = None, prompting: Optional[bool] = None):
        self.name = name or self.name
        self.label = label or self.label
        self.prompting = self.prompting if prompting is None else prompting

    def run_part(self, options: Any, value_tag: Optional[str]) -> str:  # noqa: ARG002 (used by value-model methods)
        """The run name's part after {m}_{d}_ (before any '_prompting')."""
        return self.name

    def resolve(self, options: Any, model_name: str, dataset_name: str) -> Any:  # noqa: ARG002
        """The options with their setting-dependent defaults filled in (e.g. the paper's step size)."""
        return options

    def row_label(self, options: Dict[str, Any]) -> str:  # noqa: ARG002 (RE-Control shows its alpha and n)
        """The table's name for a run of this method with these options (as recorded in its .meta.json)."""
        return self.label

    def session(self, resources: Resources, options: Any) -> ContextManager[DecodeBatch]:
        """Load what the method needs, install its hooks, and yield decode_batch(texts, conversations)."""
        raise NotImplementedError


class PlainDecoding(DecodingMethod):
    """Greedy decoding through the engine, with an edit if edit() gives one (base, Prompting, RE-Control)."""

    def edit(self, resources: Resources, options: Any):  # noqa: ARG002 (the edit of a subclass reads them)
        return None

    @contextlib.contextmanager
    def session(self, resources: Resources, options: Any) -> Iterator[DecodeBatch]:
        engine = resources.engine
        with engine.editing(self.edit(resources, options)):
            yield lambda texts, _conversations: engine.decode(texts, resources.max_new_tokens, resources.sampling,
                                                              use_cache=resources.use_cache)


_REGISTRY: Dict[str, DecodingMethod] = {}


def register(method: DecodingMethod) -> DecodingMethod:
    """Add a method (replacing one of the same name); its options must not clash with another method's flags."""
    if not method.name or not method.label:
        raise ValueError("a decoding method needs a name and a label")
    for other in _REGISTRY.values():
        if other.name == method.name:
            continue
        for field in dataclasses.fields(method.Options):
            clash = {f.name: f for f in dataclasses.fields(other.Options)}.get(field.name)
            if clash is not None and (clash.default, clash.metadata.get("help")) != (
                    field.default, field.metadata.get("help")):
                raise ValueError(f"option {field.name!r} of {method.name} differs from {other.name}'s: share one "
                                 f"definition (import it) or rename it")
    _REGISTRY[method.name] = method
    return method


def methods() -> Dict[str, DecodingMethod]:
    """Every registered method by name, the built-in ones first."""
    import utils.methods  # noqa: F401  (registers the built-in methods)
    return dict(_REGISTRY)


def get_method(name: str) -> DecodingMethod:
    registry = methods()
    if name not in registry:
        raise UsageError(f"unknown decoding method {name!r}; choose one of {', '.join(registry)}")
    return registry[name]


def option_classes() -> List[type]:
    """Each distinct Options class of the registered methods (the flags decode_methods.py and sweep.py add)."""
    seen = []
    for method in methods().values():
        if method.Options not in seen:
            seen.append(method.Options)
    return seen


def options_from(method: DecodingMethod, values: Dict[str, Any], **overrides: Any) -> Any:
    """method.Options from parsed flags (a dict that may hold other methods' flags too)."""
    names = {f.name for f in dataclasses.fields(method.Options)}
    return method.Options(**{k: v for k, v in {**values, **overrides}.items() if k in names})
