"""The built-in decoding methods, one file each, registered in utils.decoding: base, prompting, re_control and
re_control_prompting (plain.py), static_re, best_of_n, args and cd_prefix (the paper's comparison methods)."""
from utils.methods import plain  # noqa: F401  (first: the table lists the methods in registration order)
from utils.methods.static_re import StaticIntervention, linear_probe_direction

from utils.methods.best_of_n import best_of_n, keep_best  # isort: skip
from utils.methods.args import args_decode, next_cache  # isort: skip
from utils.methods.cd_prefix import cd_prefix_decode  # isort: skip

__all__ = ["StaticIntervention", "args_decode", "best_of_n", "cd_prefix_decode", "keep_best", "linear_probe_direction",
           "next_cache"]
