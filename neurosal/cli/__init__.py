"""The command line: ``neurosal <command> ...`` (``--help`` on every level), and ``python -m neurosal``.

One module per command group: :mod:`.cards` (devices and the other card listings),
:mod:`.simulate` (simulate, inspect), :mod:`.train` (train, compare-coding), :mod:`.cost`,
:mod:`.studies` (sweep, report), :mod:`.analysis` (gradcam, evaluate, export), :mod:`.demo`;
:mod:`.common` holds what they share. A mistake in an option, card or dataset file is one line
naming what was wrong and what is allowed, with exit code 2.

May import: anything of neurosal (it is the top).
"""

from __future__ import annotations

import argparse
import os
import sys

from .. import __version__
from ..accel import resolve, set_threads
from ..cards import CardError
from ..files import OutputError, check_output, kept
from . import analysis, cards, cost, demo, simulate, studies, train
from .common import CONFIG_COMMANDS, config_argv, print_config

__all__ = ["main", "build_parser"]

#: the command groups, in the order ``--help`` lists their commands
GROUPS = (cards, simulate, train, cost, studies, analysis, demo)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neurosal", description="Simulate analog in-memory-computing "
                                "neuromorphic hardware and train networks on it.")
    p.add_argument("--version", action="version", version=f"neurosal {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    p.commands = sub.choices                         # command name -> its parser
    for group in GROUPS:
        group.add_parsers(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in CONFIG_COMMANDS and any(a == "--config" or a.startswith("--config=") for a in argv):
            i = next(i for i, a in enumerate(argv) if a == "--config" or a.startswith("--config="))
            path = argv[i].split("=", 1)[1] if "=" in argv[i] else (argv[i + 1] if i + 1 < len(argv) else "")
            rest = argv[:i] + argv[i + (1 if "=" in argv[i] else 2):]
            argv = [rest[0]] + config_argv(parser, rest[0], path) + rest[1:]
    except CardError as exc:
        print(f"neurosal: bad config: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if getattr(args, "print_config", False):
        print_config(args, parser.commands[args.command])
        return 0
    try:
        if hasattr(args, "threads"):          # a command that simulates
            set_threads(args.threads)
            args.accelerator = resolve(args.accelerator)        # a bad name fails before any work
        if getattr(args, "output", None) and args.command in ("compare-coding", "cost", "gradcam", "train", "export",
                                                                       "evaluate"):
            check_output(args.output, overwrite=True, what="-o")
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        left = kept()
        print("\nneurosal: interrupted (Ctrl-C); " + ("kept: " + "; ".join(left) if left else
                                                     "nothing of this run was written"), file=sys.stderr)
        return 130
    except OutputError as exc:
        print(f"neurosal: {exc}", file=sys.stderr)
        return 1
    except CardError as exc:
        print(f"neurosal: bad card: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError,
            ValueError) as exc:
        print(f"neurosal: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
