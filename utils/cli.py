"""Argument parsing shared by the stage scripts, and the one-line error exit."""
import argparse
import sys

from utils.config import (  # noqa: F401  (the scripts' flag types, re-exported)
    add_options,
    config_fields,
    float_list,
    int_list,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    str2bool,
    unit_float,
)
from utils.errors import UsageError
from utils.runs import set_seed, setup  # noqa: F401  (the scripts' cli.setup)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


class ArgumentParser(argparse.ArgumentParser):
    """Bad flags are reported like every other bad input: one line, exit status 2."""

    def error(self, message):
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


def make_parser(doc):
    """A parser whose description is the script's docstring (with its command lines)."""
    return ArgumentParser(description=doc, formatter_class=HelpFormatter)


def build_parser(doc, *config_classes, exclude=()):
    """A parser whose description is the script's docstring and whose flags are the fields of `config_classes`
    (utils.config.option), each flag once, `exclude`d fields left out."""
    parser = make_parser(doc)
    groups, seen = {}, set(exclude)
    for config_class in config_classes:
        add_options(parser, config_class, groups, skip=seen)
        seen |= set(config_fields(config_class))
    return parser


def parse(parser, argv=None):
    """The parsed flags as a dict (bad flags: one line, exit status 2)."""
    return vars(parser.parse_args(argv))


def parse_config(parser, config_class, argv=None, **overrides):
    """config_class from the parsed flags; flags that its checks refuse are reported as bad flags (exit status 2)."""
    from utils.config import build
    values = parse(parser, argv)
    try:
        return build(config_class, values, **overrides)
    except UsageError as err:
        parser.error(str(err))


def main_guard(main):
    """Run main(); a UsageError becomes one line on stderr and exit status 2."""
    try:
        main()
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume (finished batches are kept)", file=sys.stderr)
        sys.exit(130)
