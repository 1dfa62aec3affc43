"""What every command-line command shares: argument types that name what is allowed, JSON
output, where a run happens (accelerator, threads), and ``--config`` / ``--print-config``.

May import: :mod:`neurosal.cards`, :mod:`neurosal.training` (the options of ``train``).
"""

from __future__ import annotations

import argparse
import json
import math

from ..cards import CardError, load_toml
from ..datasets import DATASETS
from ..training import options as train_options

__all__ = ["int_type", "float_type", "SEED", "POS", "print_json", "run_args", "config_args", "checkpoint_args",
           "train_args", "option_dests", "config_argv", "print_config", "NOT_CONFIG", "CONFIG_COMMANDS", "DATASETS"]


def int_type(lo: int, hi: int | None = None, extra: str = ""):
    """argparse type: an integer in [lo, hi]; a bad value is a usage error (exit 2) that
    names the argument, the value and what is allowed."""
    allowed = f"an integer >= {lo}" if hi is None else f"an integer from {lo} to {hi}"

    def conv(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer; allowed: {allowed}{extra}") from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"{v} is out of range; allowed: {allowed}{extra}")
        return v
    conv.__name__ = "integer"
    return conv


def float_type(lo: float, *, lo_open: bool = False, hi: float | None = None, hi_open: bool = False):
    """argparse type: a finite number in the given range."""
    left, right = "(" if lo_open else "[", ")" if hi_open else "]"
    allowed = f"a finite number in {left}{lo:g}, {'inf' if hi is None else f'{hi:g}'}{right if hi is not None else ')'}"

    def conv(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; allowed: {allowed}") from None
        bad = (not math.isfinite(v) or v < lo or (lo_open and v == lo)
               or (hi is not None and (v > hi or (hi_open and v == hi))))
        if bad:
            raise argparse.ArgumentTypeError(f"{v:g} is out of range; allowed: {allowed}")
        return v
    conv.__name__ = "number"
    return conv


SEED = int_type(0, 2**32 - 1)
POS = int_type(1)


def print_json(obj) -> None:
    """Standard JSON: a non-finite number (e.g. a reversal potential of inf, the ideal limit)
    is written as the string "inf", "-inf" or "nan"."""
    def finite(o):
        if isinstance(o, float) and not math.isfinite(o):
            return "nan" if math.isnan(o) else ("inf" if o > 0 else "-inf")
        if isinstance(o, dict):
            return {k: finite(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [finite(v) for v in o]
        if hasattr(o, "tolist"):
            return finite(o.tolist())
        return o
    print(json.dumps(finite(obj), indent=2, allow_nan=False))


def checkpoint_args(a: argparse.ArgumentParser, *, required: bool = True, network_help: str = "") -> None:
    """A trained chip and its data: --network, --device, --checkpoint, --dataset, --data-dir."""
    a.add_argument("--network", required=True, metavar="NAME|PATH", help=network_help or None)
    a.add_argument("--device", required=True, metavar="NAME|PATH")
    a.add_argument("--checkpoint", required=required,
                   help="the trained chip (neurosal train --out)" + ("" if required else "; default: a fresh one"))
    a.add_argument("--dataset", default="digits", choices=DATASETS,
                   help="the data (the network's input size follows it)")
    a.add_argument("--data-dir", default=None)


def config_args(a: argparse.ArgumentParser) -> None:
    a.add_argument("--config", default=None, metavar="FILE.toml",
                   help="options from a TOML file (as --print-config writes it); options given here win")
    a.add_argument("--print-config", action="store_true", help="print the resolved options as TOML and stop")


def run_args(a: argparse.ArgumentParser, *, accelerator: bool = True) -> None:
    """Where the simulation runs: accelerator and CPU threads (every command that simulates)."""
    if accelerator:
        a.add_argument("--accelerator", default="auto", metavar="auto|cpu|cuda|cuda:N",
                       help="hardware that runs the simulation (auto: a GPU when there is one); "
                            "--device is the memory device on the chip")
    a.add_argument("--threads", type=POS, default=None, metavar="N",
                   help="CPU threads (default: the cores not already busy, at least 1)")


def train_args(a: argparse.ArgumentParser, *, names=None, defaults=None, choices=None, required=()) -> None:
    """The options of :class:`~neurosal.training.TrainConfig` as flags: their types, ranges,
    choices, defaults and help come from the config's fields (``names``: a subset, in field
    order; ``defaults`` / ``choices``: a command's own, e.g. ``compare-coding``'s rules)."""
    defaults, choices = dict(defaults or {}), dict(choices or {})
    for o in train_options():
        if not o.cli or (names is not None and o.name not in names):
            continue
        if o.kind is bool:
            a.add_argument(o.flag, action="store_true", help=o.help)
            continue
        kw = dict(default=defaults.get(o.name, o.default), help=o.help, metavar=o.metavar,
                  required=o.name in required)
        if o.choices is not None:
            kw["choices"] = choices.get(o.name, o.choices)
            kw.pop("metavar")
        elif o.kind is int:
            kw["type"] = int_type(int(o.lo), None if o.hi is None else int(o.hi))
        elif o.kind is float:
            kw["type"] = float_type(o.lo, lo_open=o.lo_open, hi=o.hi, hi_open=o.hi_open)
        a.add_argument(o.flag, **kw)


CONFIG_COMMANDS = ("train", "simulate", "sweep")
NOT_CONFIG = ("func", "parser", "command", "config", "print_config", "json", "kind")


def option_dests(parser: argparse.ArgumentParser) -> dict:
    """dest -> action of a (sub)parser's options."""
    return {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}


def config_argv(parser: argparse.ArgumentParser, command: str, path: str) -> list:
    """The options a ``--config`` TOML file sets, as command-line arguments (given before the
    user's own, which therefore win)."""
    sub = parser.commands[command]
    opts = option_dests(sub)
    data = load_toml(path)
    out = []
    for k, v in data.items():
        dest = k.replace("-", "_")
        if dest not in opts or dest in NOT_CONFIG:
            raise CardError(path, k, "not an option of `neurosal " + command + "`; allowed: " +
                            ", ".join(sorted(d for d in opts if d not in NOT_CONFIG)))
        flag = max(opts[dest].option_strings, key=len)
        if isinstance(opts[dest], argparse._StoreTrueAction):
            if v is True:
                out.append(flag)
            elif v is not False:
                raise CardError(path, k, f"expected true or false, got {v!r}")
        elif isinstance(v, (dict, list)):
            raise CardError(path, k, f"expected a single value, got {v!r}")
        else:
            out += [flag, str(v)]
    return out


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v) if math.isfinite(v) else ("inf" if v > 0 else "-inf" if v < 0 else "nan")
    return json.dumps(str(v))


def print_config(args, sub: argparse.ArgumentParser) -> None:
    """The fully resolved options of this command as TOML (``--config`` reads it back)."""
    print(f"# neurosal {args.command}: the resolved options (neurosal {args.command} --config FILE reads them)")
    for dest in option_dests(sub):
        if dest in NOT_CONFIG:
            continue
        v = getattr(args, dest, None)
        if v is None:
            print(f"# {dest} = (not set: the default applies)")
        else:
            print(f"{dest} = {_toml_value(v)}")


def calibration_line(gains: dict) -> str:
    """The data-driven initialization a run made, in one line."""
    if "batch_norm" in gains:
        return f"initialization: batch-norm statistics of {gains['batch_norm']} layers set on a calibration batch"
    return "initialization (recipe spike_rate): " + ", ".join(f"{k} gain x{v['gain']:.3g} -> {v['rate']:.3f} spikes "
                                                              "per neuron and step" for k, v in gains.items())
