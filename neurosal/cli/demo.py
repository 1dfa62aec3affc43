"""``neurosal demo``: what ``make demo`` runs, on the embedded digits dataset.

May import: :mod:`neurosal.experiments`.
"""

from __future__ import annotations

from pathlib import Path

from ..experiments.demo import run_demo
from .common import POS, SEED, run_args

def _cmd_demo(args) -> int:
    return run_demo(out_dir=Path(args.out_dir), epochs=args.epochs, seed=args.seed, accelerator=args.accelerator)


def add_parsers(sub) -> None:
    """Register this group's commands."""
    d = sub.add_parser("demo", help="the main job on the embedded digits dataset")
    d.add_argument("--out-dir", default="runs")
    d.add_argument("--epochs", type=POS, default=3)
    d.add_argument("--seed", type=SEED, default=0)
    run_args(d)
    d.set_defaults(func=_cmd_demo)
