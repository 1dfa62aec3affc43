"""``neurosal gradcam``, ``evaluate`` and ``export``: a trained chip analysed, read over time, exported.

May import: :mod:`neurosal.experiments`, :mod:`neurosal.interop`, :mod:`neurosal.networks`, :mod:`neurosal.datasets`.
"""

from __future__ import annotations

import numpy as np

from ..datasets import load
from ..experiments import COMPENSATIONS, ablation, accuracy_over_time, plot_drift, plot_gradcam
from ..interop import nir as nir_mod
from ..networks import build, load_checkpoint, recipe_for
from .common import POS, SEED, checkpoint_args, print_json, run_args

def _cmd_gradcam(args) -> int:
    try:
        stages = tuple(int(v) for v in args.stages.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"--stages {args.stages!r}: not allowed; allowed: a comma list of 1, 2, 3") from None
    data = load(args.dataset, data_dir=args.data_dir, seed=args.seed, limit_test=args.samples)
    net = build(recipe_for(args.network, args.checkpoint), device=args.device, coding="rate", seed=args.seed,
                input_shape=data.shape,
                classes=data.classes, accelerator=args.accelerator)
    load_checkpoint(net, args.checkpoint)
    where = next(net.parameters()).device
    x, y = data.x_test.to(where), data.y_test.to(where)
    r = ablation(net, x, y, stages=stages, batch=args.batch, target=args.target)
    if args.output:
        r["plot"] = str(plot_gradcam(r, data.images(x)[:4], args.output,
                                     title=f"Grad-CAM of {args.network} on {args.device}, {args.dataset} "
                                           f"(off chip; {args.target} class)"))
    out = {k: v for k, v in r.items() if k != "maps"}
    if args.json:
        print_json(out)
        return 0
    acc = r["accuracy"]
    print(f"{args.network} on {args.device}, {r['samples']} {args.dataset} test samples: accuracy {acc[0]:.4f} "
          f"with attention; Grad-CAM of the {args.target} class (off chip: not counted as chip work)")
    print("  stage  map concentration (top 10 % share)")
    for s, c in r["concentration"].items():
        print(f"  {s:>5}  {c[0]:.3f} ± {c[1]:.3f}")
    if not r["blocks"]:
        print("  (no attention blocks attached: nothing to ablate)")
    else:
        print(f"  {'block':>5} {'accuracy without':>17} {'drop':>16} {'conc. with':>16} {'conc. without':>16} "
              f"{'corr. with/without':>19}")
        for b, d in r["blocks"].items():
            f = lambda t: "-" if t is None else f"{t[0]:.3f} ± {t[1]:.3f}"   # noqa: E731
            print(f"  {b:>5} {f(d['accuracy_without']):>17} {f(d['accuracy_drop']):>16} "
                  f"{f(d['concentration_with']):>16} {f(d['concentration_without']):>16} {f(d['correlation']):>19}")
    if args.output:
        print(f"wrote {r['plot']}")
    return 0


def _cmd_evaluate(args) -> int:
    try:
        times = [float(v) for v in args.times.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--times {args.times!r}: not allowed; allowed: a comma list of seconds, e.g. "
                         "1,60,3600,86400") from None
    comps = [c.strip() for c in args.compensation.split(",") if c.strip()]
    bad = [c for c in comps if c not in COMPENSATIONS]
    if bad or not comps:
        raise ValueError(f"--compensation {args.compensation!r}: not allowed; allowed: {', '.join(COMPENSATIONS)} "
                         "or both as none,global")
    data = load(args.dataset, data_dir=args.data_dir, seed=args.seed, limit_test=args.limit_test, limit_train=1)
    net = build(recipe_for(args.network, args.checkpoint), device=args.device, coding=args.coding, seed=args.seed,
                input_shape=data.shape, classes=data.classes, accelerator=args.accelerator)
    load_checkpoint(net, args.checkpoint)
    net.eval()
    where = next(net.parameters()).device
    x, y = data.x_test.to(where), data.y_test.to(where)
    results = [accuracy_over_time(net, x, y, times=times, repeats=args.repeats, compensation=c, coding=args.coding,
                                  steps=net.meta["steps"], seed=args.seed) for c in comps]
    out = {"network": args.network, "device": args.device, "samples": len(y), "results": results}
    if args.output:
        out["plot"] = str(plot_drift(results, args.output, title=f"{args.network} on {args.device}: accuracy after "
                                                                 f"programming ({len(y)} {args.dataset} samples)"))
    if args.json:
        print_json(out)
        return 0
    print(f"{args.network} on {args.device}, {len(y)} {args.dataset} test samples, {args.repeats} read-noise "
          f"draw(s) per time")
    print(f"{'time after programming (s)':>27} " + " ".join(f"{'comp. ' + r['compensation']:>18}" for r in results))
    for i, t in enumerate(times):
        print(f"{t:>27g} " + " ".join(f"{r['rows'][i]['accuracy']:>10.4f} ± {r['rows'][i]['sd']:<5.4f}"
                                      for r in results))
    if args.output:
        print(f"wrote {out['plot']}")
    return 0


def _cmd_export(args) -> int:
    data = load(args.dataset, data_dir=args.data_dir, seed=args.seed, limit_test=1, limit_train=1)
    net = build(recipe_for(args.network, args.checkpoint), device=args.device, coding=args.coding, seed=args.seed,
                input_shape=data.shape, classes=data.classes)
    if args.checkpoint:
        load_checkpoint(net, args.checkpoint)
    path = nir_mod.write(args.output, net)
    g = nir_mod.read(path)                      # what was written, read back (nir checks the graph's types)

    def shape(v):
        io = getattr(v, "input_type", None) if type(v).__name__ == "Input" else getattr(v, "output_type", None)
        if type(v).__name__ in ("Input", "Output") and isinstance(io, dict) and io:
            return [int(d) for d in np.asarray(next(iter(io.values()))).ravel()]
        return list(np.shape(getattr(v, "weight", getattr(v, "tau", []))))
    rows = [{"node": k, "type": type(v).__name__, "shape": shape(v)} for k, v in nir_mod._chain(g)]
    if args.json:
        print_json({"path": str(path), "nodes": rows, "edges": [list(e) for e in g.edges]})
        return 0
    print(f"{args.network} on {args.device} ({args.coding} coding){'' if args.checkpoint else ' (fresh network)'} "
          f"as NIR (dt {g.metadata.get('dt')} s):")
    for r in rows:
        print(f"  {r['node']:<14} {r['type']:<8} {r['shape']}")
    print(f"wrote {path}")
    return 0


def add_parsers(sub) -> None:
    """Register this group's commands."""
    gc = sub.add_parser("gradcam", help="Grad-CAM per residual stage, with and without each attention block "
                        "(off chip)")
    checkpoint_args(gc, network_help="a SAnet / ResNet recipe")
    gc.add_argument("--samples", type=POS, default=256, help="test samples the figures average over")
    gc.add_argument("--stages", default="1,2,3", help="residual stages to map (comma list of 1, 2, 3)")
    gc.add_argument("--target", default="predicted", choices=("predicted", "label"), help="class whose score is mapped")
    gc.add_argument("--batch", type=POS, default=128)
    gc.add_argument("--seed", type=SEED, default=0)
    gc.add_argument("-o", "--output", default=None, help="PNG grid (input, then each stage with and without its block)")
    gc.add_argument("--json", action="store_true")
    run_args(gc)
    gc.set_defaults(func=_cmd_gradcam)
    ev = sub.add_parser("evaluate", help="accuracy at times after programming, as the devices drift")
    checkpoint_args(ev)
    ev.add_argument("--coding", default="rate", choices=("rate", "spike", "latency"))
    ev.add_argument("--limit-test", type=POS, default=None)
    ev.add_argument("--times", default="1,60,3600,86400,2592000", help="seconds after programming, comma list")
    ev.add_argument("--repeats", type=POS, default=3, help="read-noise draws per time")
    ev.add_argument("--compensation", default="none", help="none, global, or both as none,global")
    ev.add_argument("--seed", type=SEED, default=0)
    ev.add_argument("-o", "--output", default=None, help="PNG: accuracy against time after programming")
    ev.add_argument("--json", action="store_true")
    run_args(ev)
    ev.set_defaults(func=_cmd_evaluate)
    ex = sub.add_parser("export", help="write a (trained) network as a NIR graph")
    checkpoint_args(ex, required=False)
    ex.add_argument("--coding", default="spike", choices=("spike",), help="NIR holds spiking networks")
    ex.add_argument("--format", default="nir", choices=("nir",))
    ex.add_argument("--seed", type=SEED, default=0)
    ex.add_argument("-o", "--output", required=True, help="the NIR file (.nir, HDF5)")
    ex.add_argument("--json", action="store_true")
    ex.set_defaults(func=_cmd_export)
