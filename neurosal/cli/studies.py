"""``neurosal studies``, ``neurosal sweep`` and ``neurosal report``: the shipped studies, a study's
trials, and the tables and plots made from them.

May import: :mod:`neurosal.studies`.
"""

from __future__ import annotations

from ..studies import expand, list_studies, load_study, report, sweep
from ..studies.runs import resolve_study
from .common import POS, config_args, float_type, print_json, run_args


def _cmd_studies_list(args) -> int:
    rows = []
    for n in list_studies():
        st = load_study(n)
        rows.append(dict(name=n, trials=len(expand(st)), variants=sorted(st.variants), cite=st.cite,
                         path=str(resolve_study(n))))
    if args.json:
        print_json(rows)
        return 0
    w = max(len("name"), *(len(r["name"]) for r in rows))
    print(f"{'name':<{w}}  trials  variants        cite")
    for r in rows:
        print(f"{r['name']:<{w}}  {r['trials']:>6}  {','.join(r['variants']) or '-':<14}  {r['cite']}")
    print(f"(files in {resolve_study(rows[0]['name']).parent})" if rows else "(no shipped studies)")
    return 0


def _cmd_studies_show(args) -> int:
    path = resolve_study(args.name)
    if args.json:
        st = load_study(path)
        print_json(dict(name=st.name, path=str(path), cite=st.cite, description=st.description, cut=st.cut,
                        base=st.base, grids=st.grids, variants=st.variants, trials=len(expand(st))))
    else:
        print(f"# {path}")
        print(path.read_text(), end="")
    return 0

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
    sp = sub.add_parser("studies", help="the shipped studies (run one with neurosal sweep NAME)")
    ssub = sp.add_subparsers(dest="studies_command", required=True)
    a = ssub.add_parser("list", help="list the shipped studies: trials, variants, what each reproduces")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=_cmd_studies_list)
    a = ssub.add_parser("show", help="print one study file (name or path) and where it lives")
    a.add_argument("name", metavar="NAME|PATH")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=_cmd_studies_show)
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
