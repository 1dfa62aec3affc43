"""``neurosal simulate`` and ``neurosal inspect``: run and record a network, look at a recording.

May import: :mod:`neurosal.experiments`, :mod:`neurosal.recording`, :mod:`neurosal.plots`.
"""

from __future__ import annotations

import sys

from .. import recording
from ..experiments import simulate
from ..plots import network_order, plot_raster
from .common import DATASETS, POS, SEED, calibration_line, config_args, int_type, print_json, run_args

def _cmd_simulate(args) -> int:
    record = tuple(v for v in args.record.split(",") if v) if args.record else ()
    out = simulate(args.network, args.device, coding=args.coding, steps=args.steps, samples=args.samples,
                   dataset=args.dataset, data_dir=args.data_dir, record=record, out=args.out, record_samples=args.record_samples,
                   checkpoint=args.checkpoint, overwrite=args.overwrite, seed=args.seed, batch=args.batch,
                   chunk=args.chunk, path=args.path, progress=not args.json, accelerator=args.accelerator,
                   probe=[v for v in args.probe.split(",") if v] if args.probe else None, solver=args.solver,
                   size_check=not args.skip_size_check)
    if args.json:
        print_json(out)
        return 0
    print(f"{out['network']} on {out['device']}, {out['coding']} coding, T = {out['steps']}, "
          f"{out['samples']} {out['dataset']} samples{'' if out['checkpoint'] else ' (fresh network)'}: "
          f"accuracy {out['accuracy']:.3f} in {out['seconds']:.2f} s")
    wn = max([8] + [len(n) for n in out["layers"]])
    print(f"{'layer':<{wn}} {'spikes/sample':>14} {'rate':>7} {'input events':>13} {'synaptic events':>16} "
          f"{'ADC conv.':>10}")
    for name, ev in out["layers"].items():
        sp = "-" if ev.get("spikes") is None else f"{ev['spikes']:.1f}"
        rate = f"{ev['rate']:.3f}" if ev.get("rate") is not None else "-"
        print(f"{name:<{wn}} {sp:>14} {rate:>7} {ev.get('input_events', 0):>13.1f} "
              f"{ev.get('synaptic_events', 0):>16.0f} {ev.get('adc_conversions', 0):>10.0f}")
    print("rate: spikes per neuron and step (charge-domain layers: per neuron and phase)")
    if out.get("gains"):
        print(calibration_line(out["gains"]))
    for w in out.get("warnings", ()):
        print(f"warning: {w}", file=sys.stderr)
    if out["out"]:
        print(f"wrote {out['out']}")
    return 0


def _cmd_inspect(args) -> int:
    rec = recording.open(args.file, allow_incomplete=args.allow_incomplete)
    info = rec.summary()
    if args.raster:
        png = plot_raster(rec, args.output, sample=args.sample)
        info["raster"] = str(png)
    if args.json:
        print_json(info)
        return 0
    print(f"{info['path']}: SONATA {'.'.join(map(str, info['sonata_version']))}"
          f"{'' if info['complete'] else '  (INCOMPLETE: the run did not finish)'}")
    md = info["metadata"]
    if md:
        net = md.get("network", {}).get("name", "?") if isinstance(md.get("network"), dict) else "?"
        devs = md.get("devices", {})
        dev = ", ".join(v.get("name", "?") for v in devs.values()) if isinstance(devs, dict) else "?"
        print(f"  network {net}, device {dev}, coding {md.get('coding', '?')}, steps {md.get('steps', '?')}, "
              f"dt {md.get('dt_ms', '?')} ms, seed {md.get('seed', '?')}, dataset {md.get('dataset', '?')}")
        if isinstance(md.get("versions"), dict):
            print("  versions " + ", ".join(f"{k} {v}" for k, v in md["versions"].items()))
        eng = md.get("engine")
        if isinstance(eng, dict):
            print(f"  engine: {eng.get('steps', '?')} step(s) of {eng.get('dt_ms', '?')} ms, "
                  f"{len(eng.get('components', {}))} components" + (f"; {eng['time']}" if eng.get("time") else ""))
        cp = md.get("summary", {}).get("coprocessor") if isinstance(md.get("summary"), dict) else None
        if cp:
            print("  co-processor (whole run): " + "; ".join(
                f"{b} {w.get('macs', 0):,d} MACs, {w.get('transfers_in', 0) + w.get('transfers_out', 0):,d} transfers"
                for b, w in cp.items()))
    if info["populations"]:
        w = max(10, *(len(p) for p in info["populations"]))
        print(f"  {'spikes':<{w}} {'neurons':>8} {'samples':>8} {'spikes':>9} {'per sample':>11}  {'sorting':<8} shape")
        for p in network_order(md, info["populations"]):
            d = info["populations"][p]
            per = "-" if d["spikes_per_sample"] is None else f"{d['spikes_per_sample']:.1f}"
            shape = "x".join(map(str, d["shape"])) if d.get("shape") else ""
            print(f"  {p:<{w}} {d['neurons'] or '-':>8} {d['samples'] or '-':>8} {d['spikes']:>9} {per:>11}  "
                  f"{str(d['sorting']):<8} {shape}")
    if info["reports"]:
        w = max(16, *(len(r) for r in info["reports"]))
        print(f"  {'report':<{w}} {'[time, values]':>16}  units")
        for r, d in info["reports"].items():
            print(f"  {r:<{w}} {str(d['shape']):>16}  {d['units']}")
    if args.raster:
        print(f"wrote {info['raster']}")
    return 0


def add_parsers(sub) -> None:
    """Register this group's commands."""
    s = sub.add_parser("simulate", help="run a network on dataset samples and record spikes / traces to HDF5")
    s.add_argument("--network", required=True, metavar="NAME|PATH", help="network recipe (e.g. mlp-64-100-10)")
    s.add_argument("--device", required=True, metavar="NAME|PATH", help="device card of the crossbars")
    s.add_argument("--coding", default="spike", choices=("rate", "spike", "latency"))
    s.add_argument("--steps", type=POS, default=None, help="time steps (default: the recipe's; rate coding: 1)")
    s.add_argument("--samples", type=POS, default=100, help="test samples to simulate")
    s.add_argument("--dataset", default="digits", choices=DATASETS)
    s.add_argument("--data-dir", default=None, help="folder with the dataset files (default data/<dataset>)")
    s.add_argument("--record", default="spikes",
                   help="comma list of spikes,v,current,gate ('' = nothing); each component records those it has")
    s.add_argument("--probe", default=None, metavar="NAMES",
                   help="comma list of components to record (default: all; `neurosal inspect` or an unknown "
                        "name lists them)")
    s.add_argument("--solver", default=None, choices=("dstd", "exact"),
                   help="charge-domain networks: DSTD grid (default) or the exact event-driven solution")
    s.add_argument("--record-samples", type=POS, default=16, help="how many of the samples to record")
    s.add_argument("--out", default=None, help="recording file (.h5); nothing is written without it")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    s.add_argument("--skip-size-check", action="store_true",
                   help="write even where the recording could outgrow the free disk space (the estimate counts "
                        "spikes as if every neuron fired every step)")
    s.add_argument("--checkpoint", default=None, help="trained network checkpoint (default: fresh network)")
    s.add_argument("--seed", type=SEED, default=0)
    s.add_argument("--batch", type=POS, default=256)
    s.add_argument("--chunk", type=POS, default=64,
                   help="time steps the engine reads per array call (memory grows with it; for convolutional "
                        "networks a small chunk keeps the maps in the CPU's cache: 1 is fastest there)")
    s.add_argument("--path", default="auto", choices=("auto", "event", "dense"),
                   help="crossbar reads: event-driven, dense, or chosen by activity")
    s.add_argument("--json", action="store_true")
    run_args(s)
    config_args(s)
    s.set_defaults(func=_cmd_simulate)
    i = sub.add_parser("inspect", help="what is in a recording; --raster draws a spike raster")
    i.add_argument("file")
    i.add_argument("--json", action="store_true")
    i.add_argument("--raster", action="store_true", help="draw a spike raster PNG (see -o, --sample)")
    i.add_argument("-o", "--output", default="raster.png")
    i.add_argument("--sample", type=int_type(0), default=0, help="which recorded sample the raster shows")
    i.add_argument("--allow-incomplete", action="store_true", help="read a file whose run did not finish")
    i.set_defaults(func=_cmd_inspect)
