"""Typed, documented options (TRL's `RLOOConfig` style): a stage's options are one frozen dataclass, and its
command-line parser is built from it, so each option's type, default and help are written once.

    @dataclass(frozen=True)
    class MyConfig:
        lr: float = option(1e-4, "Adam learning rate", parse=positive_float)

    config = parse_config(MyConfig, __doc__, argv)   # --lr 0.001 -> MyConfig(lr=0.001)
"""
import argparse
import dataclasses
import typing
from typing import Any, Callable, Optional, Sequence, Tuple, Type, TypeVar

from utils.errors import UsageError

C = TypeVar("C")


def str2bool(value):
    """Parse 'True'/'False' (and yes/no/1/0) so that `--flag False` means off."""
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in ("true", "t", "yes", "y", "1", "on"):
        return True
    if lowered in ("false", "f", "no", "n", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (True/False), got {value!r}")


def _bounded(kind, low, inclusive, high=None):
    def parse(value):
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {value!r}")
        if number < low or (number == low and not inclusive):
            relation = ">=" if inclusive else ">"
            raise argparse.ArgumentTypeError(f"must be {relation} {low}, got {value}")
        if high is not None and number > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {value}")
        return number
    parse.__name__ = kind.__name__
    return parse


positive_int = _bounded(int, 1, True)
nonnegative_int = _bounded(int, 0, True)
nonnegative_float = _bounded(float, 0.0, True)
positive_float = _bounded(float, 0.0, False)
unit_float = _bounded(float, 0.0, True, high=1.0)


def _list_of(parse):
    def parse_list(value):
        values = [parse(v) for v in value.split(",") if v.strip()]
        if not values:
            raise argparse.ArgumentTypeError("give at least one value (comma-separated)")
        return values
    parse_list.__name__ = f"list of {parse.__name__}"
    return parse_list


float_list = _list_of(nonnegative_float)  # '0.5,1,2' -> [0.5, 1.0, 2.0]
int_list = _list_of(nonnegative_int)  # '10,20' -> [10, 20]


def option(default: Any, help: str, *, flags: Sequence[str] = (), parse: Optional[Callable] = None,
           choices: Optional[Sequence] = None, required: bool = False, group: Optional[str] = None,
           repeat: bool = False, record_only: bool = False) -> Any:
    """A config field with its help text; `flags` are the command-line names (default --{field name}), `parse`
    the argparse type (default: from the annotation; booleans parse 'False' as False); `repeat`: the flag may be
    given several times (a tuple of the values); `record_only`: kept in the run's description, never a setting
    (utils.io.run_settings)."""
    return dataclasses.field(default=default, metadata=dict(help=help, flags=tuple(flags), parse=parse,
                                                            choices=choices, required=required, group=group,
                                                            repeat=repeat, record_only=record_only))


def redefault(config_class: type, name: str, default: Any) -> Any:
    """The field `name` of `config_class` with another default (its help and flags kept): for a stage whose
    default differs, e.g. `batch_size: int = redefault(GenerationOptions, "batch_size", 16)`."""
    base = config_class.__dataclass_fields__[name]
    return dataclasses.field(default=default, metadata=base.metadata)


def _parser_type(field: dataclasses.Field, hints: dict) -> Optional[Callable]:
    parse = field.metadata.get("parse")
    if parse is not None:
        return parse
    kind = hints.get(field.name, str)
    if typing.get_origin(kind) is typing.Union:  # Optional[X] -> X
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    return str2bool if kind is bool else kind if kind in (int, float, str) else str


def add_options(parser: argparse.ArgumentParser, config_class: type, groups: Optional[dict] = None,
                skip: Sequence[str] = ()) -> None:
    """One flag per field of `config_class` (but `skip`), in declaration order; a field with a `group` goes into
    that argument group (`groups` keeps them across calls)."""
    hints = typing.get_type_hints(config_class)
    groups = {} if groups is None else groups
    for field in dataclasses.fields(config_class):
        meta = field.metadata
        if "help" not in meta or field.name in skip:
            continue
        target = parser
        if meta.get("group"):
            if meta["group"] not in groups:
                groups[meta["group"]] = parser.add_argument_group(meta["group"])
            target = groups[meta["group"]]
        kwargs = dict(dest=field.name, type=_parser_type(field, hints), help=meta["help"])
        if meta.get("choices"):
            kwargs["choices"] = list(meta["choices"])
        if meta.get("repeat"):
            kwargs["action"] = "append"
        if meta.get("required"):
            kwargs["required"] = True
        else:
            kwargs["default"] = field.default
        target.add_argument(*(meta.get("flags") or (f"--{field.name}",)), **kwargs)


def as_dict(config: Any) -> dict:
    """A config's fields (or an argparse Namespace's attributes) as a plain dict."""
    if dataclasses.is_dataclass(config):
        return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    return dict(vars(config))


def build(config_class: Type[C], values: dict, **overrides: Any) -> C:
    """config_class from parsed values (extra keys ignored); a failed check in its __post_init__ is a UsageError."""
    names = set(config_fields(config_class))
    try:
        return config_class(**{k: v for k, v in {**values, **overrides}.items() if k in names})
    except ValueError as err:
        raise UsageError(str(err)) from None


def config_fields(config_class: type) -> Tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(config_class))

