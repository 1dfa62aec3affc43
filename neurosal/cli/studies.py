"""``neurosal sweep`` and ``neurosal report``: a study's trials, and the tables and plots made from them.

May import: :mod:`neurosal.studies`.
"""

from __future__ import annotations

from ..studies import report, sweep
from .common import POS, config_args, float_type, print_json, run_args

def _cmd_sweep(args) -> int:
    r = sweep(args.study, args.out, workers=args.workers, ray=args.ray, accelerator=args.accelerator,
              variant=args.variant, data_dir=args.data_dir, progress=not args.json,
              gpus_per_trial=args.gpus_per_trial, threads=args.threads)
    if args.json:
        print_json(r)
        return 0
    failed = f", {r['failed']} failed (recorded with their error)" if r["failed"] else ""
    print(f"{args.study}: {r['trials']} trials, {r['done_before']} already in {args.out}, ran {r['run']}{failed}")
    return 0


def _cmd_report(args) -> int:
    r = report(args.results, args.output, x=args.x)
    if args.json:
        print_json({"files": r["files"], "tables": r["tables"]})
        return 0
    for t in r["tables"].values():
        print(t)
    if r["files"]:
        print("wrote " + ", ".join(r["files"]))
    return 0


def add_parsers(sub) -> None:
    """Register this group's commands."""
    w = sub.add_parser("sweep", help="run a study's trials (local workers or Ray), one JSON line per finished trial")
    w.add_argument("study", help="a study file (.toml) or the name of a shipped study, e.g. kwon-hybrid")
    w.add_argument("--out", required=True, help="results file (.jsonl); a rerun skips the trials already in it")
    w.add_argument("--workers", type=POS, default=1, help="local worker processes (threads: the cores divided)")
    w.add_argument("--ray", default=None, metavar="auto|local|ADDRESS",
                   help="run the trials as Ray tasks (pip install 'neurosal[ray]')")
    w.add_argument("--gpus-per-trial", type=float_type(0), default=0.0, help="Ray: GPU fraction per trial")
    w.add_argument("--variant", default=None, help="a [variants.NAME] of the study (e.g. full)")
    w.add_argument("--data-dir", default=None, help="dataset folder for every trial (replaces the study's)")
    w.add_argument("--json", action="store_true")
    run_args(w)
    config_args(w)
    w.set_defaults(func=_cmd_sweep)
    rp = sub.add_parser("report", help="tables (mean ± SE over seeds) and plots from a sweep's results")
    rp.add_argument("results", help="results file (.jsonl) written by neurosal sweep")
    rp.add_argument("-o", "--output", default=None, metavar="DIR", help="write <study>.md, .csv and PNG plots here")
    rp.add_argument("--x", default=None, metavar="AXIS", help="the plots' x axis (default: a nonideality level, "
                    "else the device, else the axis with the most values)")
    rp.add_argument("--json", action="store_true")
    rp.set_defaults(func=_cmd_report)
