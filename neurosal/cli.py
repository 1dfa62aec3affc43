"""Command-line interface: ``neurosal <command> ...`` (``--help`` on every level)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from .cards import CardError
from .files import OutputError


def _int(lo: int, hi: int | None = None, extra: str = ""):
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


def _float(lo: float, *, lo_open: bool = False, hi: float | None = None, hi_open: bool = False):
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


_SEED = _int(0, 2**32 - 1)
_POS = _int(1)


def _print_json(obj) -> None:
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


# ----------------------------------------------------------------------------- devices
def _cmd_devices_list(args) -> int:
    from .devices import Device, list_devices
    rows = []
    for name in list_devices():
        c = Device(name).card
        rows.append(dict(name=name, model=c.model, levels=c.levels, g_min=c.g_min, g_max=c.g_max,
                         on_off=c.on_off, nl_up=c.nl_up, nl_down=c.nl_down, a_up=c.a_up, a_down=c.a_down,
                         c2c=c.noise.c2c, read=c.noise.read, d2d_bounds=c.variation.bounds,
                         stuck=c.faults.stuck_min + c.faults.stuck_max, drift_nu=c.drift.nu,
                         description=c.description))
    if args.json:
        _print_json(rows)
        return 0
    hdr = f"{'name':<18} {'model':<12} {'levels':>6} {'Gmin (S)':>10} {'Gmax (S)':>10} {'on/off':>7} " \
          f"{'NL up/down':>12} {'C2C':>6} {'read':>6} {'D2D':>5} {'stuck':>6}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        if r["nl_up"] is not None or r["nl_down"] is not None:
            nl = f"{r['nl_up'] or 0:g}/{r['nl_down'] or 0:g}"
        elif r["a_up"] is not None:
            nl = f"A {r['a_up']:g}/{r['a_down']:g}"
        else:
            nl = "-"
        print(f"{r['name']:<18} {r['model']:<12} {r['levels']:>6} {r['g_min']:>10.3g} {r['g_max']:>10.3g} "
              f"{r['on_off']:>7.3g} {nl:>12} {r['c2c']:>6.1%} {r['read']:>6.1%} {r['d2d_bounds']:>5.0%} "
              f"{r['stuck']:>6.1%}")
    return 0


def _cmd_devices_show(args) -> int:
    from .cost import device_energies, load_periphery
    from .devices import Device
    d = Device(args.device)
    info = d.describe()
    e = device_energies(d.card, load_periphery())
    info["cost"] = {"write_pj_per_pulse": e["write_j"] * 1e12, "read_fj_per_cell": e["read_j"] * 1e15,
                    "pulse_s": e["pulse_s"],
                    "from": ("the card's [energy] table" if not any(e["derived"].values()) else
                             "derived from [pulse]: V^2 x mean G x width; 2 V_read^2 x mean G x t_read (isaac-32nm)")}
    if args.json:
        _print_json(info)
        return 0
    for k, v in info.items():
        if isinstance(v, dict):
            print(f"[{k}]")
            for kk, vv in v.items():
                print(f"  {kk:<14} {vv}")
        else:
            print(f"{k:<16} {v}")
    return 0


def _cmd_devices_curve(args) -> int:
    from .devices import Device
    up, down = Device(args.device).curve(args.pulses)
    out = dict(device=args.device, pulses=args.pulses, units="S", potentiation=up.tolist(),
               depression=down.tolist())
    if args.json:
        _print_json(out)
    else:
        print("pulse  potentiation (S)  depression (S)")
        for i, (a, b) in enumerate(zip(up, down)):
            print(f"{i:>5}  {a:>16.5g}  {b:>14.5g}")
    return 0


def _cmd_devices_plot(args) -> int:
    from .plots import plot_device_curves
    out = plot_device_curves(args.devices, args.output, samples=args.samples, seed=args.seed)
    print(f"wrote {out}")
    return 0


# ----------------------------------------------------------------------------- other card listings
def _print_card(d: dict, indent: str = "") -> None:
    """A card as aligned ``key value`` lines, tables as ``[section]`` blocks."""
    for k, v in d.items():
        if not isinstance(v, dict):
            print(f"{indent}{k:<18} {v}")
    for k, v in d.items():
        if isinstance(v, dict):
            print(f"{indent}[{k}]")
            _print_card(v, indent + "  ")


def _network_row(name: str) -> dict:
    from .networks import load_network
    c = load_network(name)
    shape = ("-".join(str(int(v)) for v in c.sizes) if c.kind in ("mlp", "charge-mlp") else
             f"depth {c.depth}, width {c.width}" if c.kind == "resnet" else f"width {c.width}")
    return dict(name=name, kind=c.kind, shape=shape, neuron=c.neuron,
                attention=c.attention if c.kind == "resnet" else "-", steps=c.steps, description=c.description)


def _cmd_cards_list(args) -> int:
    from .cost import list_coprocessors, list_periphery, load_coprocessor, load_periphery
    from .networks import list_networks
    if args.kind == "networks":
        rows = [_network_row(n) for n in list_networks()]
        cols = ("name", "kind", "shape", "neuron", "attention", "steps")
    else:
        names, load = ((list_periphery(), load_periphery) if args.kind == "periphery"
                       else (list_coprocessors(), load_coprocessor))
        rows = []
        for n in names:
            c = load(n)
            rows.append(dict(name=n, technology_nm=c.technology_nm, description=c.description))
        cols = ("name", "technology_nm")
    if args.json:
        _print_json(rows)
        return 0
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(f"{c:<{widths[c]}}" for c in cols) + "  description")
    for r in rows:
        print("  ".join(f"{str(r[c]):<{widths[c]}}" for c in cols) + f"  {r['description']}")
    return 0


def _cmd_cards_show(args) -> int:
    from .cards import to_dict
    from .cost import load_coprocessor, load_periphery
    from .networks import load_network
    load = {"networks": load_network, "periphery": load_periphery, "coprocessor": load_coprocessor}[args.kind]
    d = to_dict(load(args.name))
    if args.json:
        _print_json(d)
    else:
        _print_card(d)
    return 0


# ----------------------------------------------------------------------------- demo
def _cmd_demo(args) -> int:
    from .demo import run_demo
    return run_demo(out_dir=Path(args.out_dir), epochs=args.epochs, seed=args.seed, accelerator=args.accelerator)


# ----------------------------------------------------------------------------- simulate / inspect
def _cmd_simulate(args) -> int:
    from .simulate import simulate
    record = tuple(v for v in args.record.split(",") if v) if args.record else ()
    out = simulate(args.network, args.device, coding=args.coding, steps=args.steps, samples=args.samples,
                   dataset=args.dataset, data_dir=args.data_dir, record=record, out=args.out, record_samples=args.record_samples,
                   checkpoint=args.checkpoint, overwrite=args.overwrite, seed=args.seed, batch=args.batch,
                   path=args.path, progress=not args.json, accelerator=args.accelerator)
    if args.json:
        _print_json(out)
        return 0
    print(f"{out['network']} on {out['device']}, {out['coding']} coding, T = {out['steps']}, "
          f"{out['samples']} {out['dataset']} samples{'' if out['checkpoint'] else ' (fresh network)'}: "
          f"accuracy {out['accuracy']:.3f} in {out['seconds']:.2f} s")
    print(f"{'layer':<8} {'spikes/sample':>14} {'input events':>13} {'synaptic events':>16} {'ADC conv.':>10}")
    for name, ev in out["layers"].items():
        sp = "-" if ev.get("spikes") is None else f"{ev['spikes']:.1f}"
        print(f"{name:<8} {sp:>14} {ev.get('input_events', 0):>13.1f} {ev.get('synaptic_events', 0):>16.0f} "
              f"{ev.get('adc_conversions', 0):>10.0f}")
    if out["out"]:
        print(f"wrote {out['out']}")
    return 0


def _cmd_inspect(args) -> int:
    from . import recording
    rec = recording.open(args.file, allow_incomplete=args.allow_incomplete)
    info = rec.summary()
    if args.raster:
        from .plots import plot_raster
        png = plot_raster(rec, args.output, sample=args.sample)
        info["raster"] = str(png)
    if args.json:
        _print_json(info)
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
    if info["populations"]:
        print(f"  {'spikes':<10} {'neurons':>8} {'samples':>8} {'spikes':>9} {'per sample':>11}  sorting")
        for p, d in info["populations"].items():
            per = "-" if d["spikes_per_sample"] is None else f"{d['spikes_per_sample']:.1f}"
            print(f"  {p:<10} {d['neurons'] or '-':>8} {d['samples'] or '-':>8} {d['spikes']:>9} {per:>11}  "
                  f"{d['sorting']}")
    if info["reports"]:
        print(f"  {'report':<16} {'[time, values]':>16}  units")
        for r, d in info["reports"].items():
            print(f"  {r:<16} {str(d['shape']):>16}  {d['units']}")
    if args.raster:
        print(f"wrote {info['raster']}")
    return 0


# ----------------------------------------------------------------------------- train
_TRAIN_KEYS = ("network", "device", "rule", "coding", "dataset", "seed", "lr", "batch", "steps", "rounding",
               "limit_train", "limit_test", "array", "readback", "crop", "binarize", "attach", "attach_epochs",
               "attach_gate")


def _cmd_train(args) -> int:
    from .learning import resume_config, train
    if args.resume:
        # options left at their defaults take the checkpoint's values; one given that differs
        # from the checkpoint's is an error (train() names it)
        saved = resume_config(args.resume)["config"]
        for k in _TRAIN_KEYS:
            if k in saved and getattr(args, k) == args.parser.get_default(k):
                setattr(args, k, saved[k])
        if args.out is None:
            args.out = args.resume
    elif args.network is None or args.device is None:
        raise ValueError("train: --network and --device are required (or --resume CKPT)")
    r = train(args.network, args.device, rule=args.rule, coding=args.coding, dataset=args.dataset,
              data_dir=args.data_dir, epochs=args.epochs, seed=args.seed, lr=args.lr, batch=args.batch,
              steps=args.steps, rounding=args.rounding, out=args.out, limit_train=args.limit_train,
              limit_test=args.limit_test, progress=not args.json, array=args.array, readback=args.readback,
              accelerator=args.accelerator, crop=args.crop, binarize=args.binarize, overwrite=args.overwrite,
              resume=args.resume, attach=args.attach, attach_epochs=args.attach_epochs, attach_gate=args.attach_gate,
              log=args.log, tensorboard=args.tensorboard)
    if args.output:
        from .plots import plot_history
        r["plot"] = str(plot_history(r, args.output))
    if args.json:
        _print_json(r)
        return 0
    print(f"{r['network']} on {r['device']}{' (first layer only)' if args.array == 'first' else ''}, rule {r['rule']} ({r['rounding']} rounding), {r['coding']} coding, "
          f"{r['dataset']}, {r['epochs']} epoch(s), {r['seconds']:.1f} s on {r['accelerator']}"
          + (f" ({r['threads']} thread{'s' if r['threads'] != 1 else ''})" if r['accelerator'] == "cpu" else ""))
    for h in r["history"]:
        print(f"  epoch {h['epoch']:>3}: loss {h['loss']:.4f}  test accuracy {h['test_accuracy']:.4f}")
    extra = f", software accuracy before programming {r['software_accuracy']:.4f}" if "software_accuracy" in r else ""
    print(f"test accuracy {r['test_accuracy']:.4f}{extra}")
    dropped = f", updates dropped at the end of a pair's range {r['clipped_cells']:,d}" if r["rule"] == "hybrid" else ""
    print(f"pulses {r['pulses']:,d}, verify reads {r['verify_reads']:,d}{dropped}")
    ct, ci = r["cost"]["training"], r["cost"]["inference"]
    print(f"energy (cost cards {r['cost']['periphery']}, {r['cost']['coprocessor']}): training {ct['energy_j']:.4g} J "
          f"({100 * ct['digital_energy_j'] / max(ct['energy_j'], 1e-300):.1f} % digital; forward "
          f"{ct['phases']['forward']:.3g} J, backward {ct['phases']['backward']:.3g} J, update "
          f"{ct['phases']['update']:.3g} J); inference {ci['energy_per_sample_j'] * 1e9:.4g} nJ per sample")
    if "attention" in r:
        a = r["attention"]
        dev = ", ".join(f"stage {k}: {v:.3f}" for k, v in a["deviation"].items()) if a["deviation"] else None
        print(f"attention ({a['kind']}): blocks at stages {a['blocks'] or 'none'}, used by inference: "
              f"{a['attached'] or 'none'}" + (f"; detached after epoch {a['attach_epochs']}"
                                               if a["attach_epochs"] is not None else "")
              + (f"; fresh chip's deviation from ideal {dev} (gate {a['attach_gate']:g})" if dev else "")
              + f"; digital share of energy: {100 * r['digital_share']['inference']:.1f} % per inference, "
                f"{100 * r['digital_share']['training']:.1f} % in training")
    for name, c in r["layers"].items():
        print(f"  {name}: {c['forward_reads']:,d} forward reads, {c['backward_reads']:,d} backward reads, "
              f"{c['adc_conversions']:,d} ADC conversions, {c['pulses']:,d} pulses")
    if args.out:
        print(f"wrote {args.out}")
    if args.log:
        print(f"wrote {args.log}")
    if args.output:
        print(f"wrote {r['plot']}")
    return 0


def _cmd_compare(args) -> int:
    from .compare import compare_coding, plot_comparison
    r = compare_coding(args.network, args.device, dataset=args.dataset, data_dir=args.data_dir, rule=args.rule,
                       epochs=args.epochs, steps=args.steps, seed=args.seed, lr=args.lr, batch=args.batch,
                       limit_train=args.limit_train, limit_test=args.limit_test, progress=not args.json,
                       accelerator=args.accelerator)
    if args.output:
        r["plot"] = str(plot_comparison(r, args.output))
    if args.json:
        _print_json(r)
        return 0
    print(f"{r['network']} on {r['device']}, {r['dataset']}, rule {r['rule']}, {r['epochs']} epoch(s)")
    print(f"{'coding':<8} {'T':>4} {'accuracy':>9} {'spikes/sample':>14} {'syn. events/sample':>19} "
          f"{'ADC conv./sample':>17} {'nJ/inference':>13} {'train pulses':>13} {'train energy':>13}")
    for c in r["codings"]:
        sp = "-" if c["spikes_per_sample"] is None else f"{c['spikes_per_sample']:.0f}"
        print(f"{c['coding']:<8} {c['steps']:>4} {c['test_accuracy']:>9.4f} {sp:>14} "
              f"{c['synaptic_events_per_sample']:>19,.0f} {c['adc_conversions_per_sample']:>17,.0f} "
              f"{c['energy_per_sample_j'] * 1e9:>13.4g} {c['train_pulses']:>13,d} {c['train_energy_j']:>11.3g} J")
    print(f"energy from the test run's events with the cost cards {r['periphery']} and {r['coprocessor']}")
    if args.output:
        print(f"wrote {r['plot']}")
    return 0


# ----------------------------------------------------------------------------- cost
def _cmd_cost(args) -> int:
    from .cost import PHASES, measure, plot_breakdown
    rule = None if args.rule == "none" else args.rule
    r = measure(args.network, args.device, coding=args.coding, rule=rule, steps=args.steps, dataset=args.dataset,
                data_dir=args.data_dir, batch=args.batch, seed=args.seed, periphery=args.periphery,
                coprocessor=args.coprocessor, checkpoint=args.checkpoint, accelerator=args.accelerator)
    inf, trn = r["inference"], r.get("training")
    n = max(1, inf.samples)
    out = {"network": r["network"], "device": args.device, "coding": r["coding"], "steps": r["steps"],
           "rule": rule, "batch": r["batch"],
           # per inference (one sample)
           "energy_j": inf.energy_j / n, "latency_s": r["inference_per_sample"].latency["forward"],
           "area_mm2": inf.area_mm2,
           "analog_energy_j": inf.analog_energy_j / n, "digital_energy_j": inf.digital_energy_j / n,
           "components": {k: v / n for k, v in inf.as_dict()["components"].items()},
           "layers": [{"name": la["name"], "kind": la["kind"], "energy_j": la["energy_j"] / n,
                       "area_mm2": la["area_mm2"],
                       "components": {k: v / n for k, v in la["phases"]["forward"]["components"].items()}}
                      for la in inf.per_layer()],
           "periphery": inf.meta["periphery"], "coprocessor": inf.meta["coprocessor"],
           "technology_nm": inf.meta["technology_nm"]}
    if trn is not None:
        td = trn.as_dict()
        out["training_step"] = {k: td[k] for k in ("energy_j", "latency_s", "analog_energy_j", "digital_energy_j",
                                                    "phases", "components")}
        out["training_step"]["batch"] = trn.samples
        for la, lt in zip(out["layers"], trn.per_layer()):
            la["training_step"] = {ph: {"energy_j": lt["phases"][ph]["energy_j"],
                                        "latency_s": lt["phases"][ph]["latency_s"]} for ph in PHASES}
    if args.output:
        out["plot"] = str(plot_breakdown(r, args.output))
    if args.json:
        _print_json(out)
        return 0
    print(f"{out['network']} on {args.device}, {out['coding']} coding (T = {out['steps']}); cost cards "
          f"{out['periphery']} ({out['technology_nm']:g} nm), {out['coprocessor']}; events of {r['batch']} "
          f"test samples" + (f" and one {rule} training step (batch {trn.samples})" if trn is not None else ""))
    head = f"{'layer':<22} {'pJ/inference':>13} {'digital %':>9} {'area mm2':>9}"
    if trn is not None:
        head += f" {'step fwd nJ':>11} {'bwd nJ':>9} {'upd nJ':>9} {'upd us':>8}"
    print(head)
    for la in out["layers"]:
        d = la["components"].get("digital", 0) + la["components"].get("coprocessor", 0)
        line = (f"{la['name']:<22} {la['energy_j'] * 1e12:>13.4g} {100 * d / max(la['energy_j'], 1e-300):>9.1f} "
                f"{la['area_mm2']:>9.4f}")
        if trn is not None:
            ts = la["training_step"]
            line += (f" {ts['forward']['energy_j'] * 1e9:>11.4g} {ts['backward']['energy_j'] * 1e9:>9.4g} "
                     f"{ts['update']['energy_j'] * 1e9:>9.4g} {ts['update']['latency_s'] * 1e6:>8.3g}")
        print(line)
    print(f"per inference: {out['energy_j'] * 1e9:.4g} nJ (analog {out['analog_energy_j'] * 1e9:.4g} nJ, digital "
          f"{out['digital_energy_j'] * 1e9:.4g} nJ), latency {out['latency_s'] * 1e6:.4g} us; area "
          f"{out['area_mm2']:.4f} mm2")
    print("  by component (nJ): " + ", ".join(f"{k} {v * 1e9:.3g}" for k, v in out["components"].items() if v))
    if trn is not None:
        t = out["training_step"]
        print(f"per training step ({rule}, batch {trn.samples}): {t['energy_j'] * 1e6:.4g} uJ (digital "
              f"{100 * t['digital_energy_j'] / max(t['energy_j'], 1e-300):.1f} %), latency "
              f"{t['latency_s'] * 1e3:.4g} ms = " + " + ".join(
                  f"{ph} {t['phases'][ph]['latency_s'] * 1e3:.3g}" for ph in PHASES) + " ms")
    if args.output:
        print(f"wrote {out['plot']}")
    return 0


# ----------------------------------------------------------------------------- sweep / report
def _cmd_sweep(args) -> int:
    from .sweep import sweep
    r = sweep(args.study, args.out, workers=args.workers, ray=args.ray, accelerator=args.accelerator,
              variant=args.variant, data_dir=args.data_dir, progress=not args.json,
              gpus_per_trial=args.gpus_per_trial, threads=args.threads)
    if args.json:
        _print_json(r)
        return 0
    failed = f", {r['failed']} failed (recorded with their error)" if r["failed"] else ""
    print(f"{args.study}: {r['trials']} trials, {r['done_before']} already in {args.out}, ran {r['run']}{failed}")
    return 0


def _cmd_report(args) -> int:
    from .report import report
    r = report(args.results, args.output, x=args.x)
    if args.json:
        _print_json({"files": r["files"], "tables": r["tables"]})
        return 0
    for t in r["tables"].values():
        print(t)
    if r["files"]:
        print("wrote " + ", ".join(r["files"]))
    return 0


# ----------------------------------------------------------------------------- gradcam
def _cmd_gradcam(args) -> int:
    from .datasets import load
    from .gradcam import ablation, plot_gradcam
    from .networks import build, load_checkpoint, recipe_for
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
        _print_json(out)
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


# ----------------------------------------------------------------------------- evaluate (drift)
def _cmd_evaluate(args) -> int:
    from .datasets import load
    from .drift import COMPENSATIONS, accuracy_over_time, plot_drift
    from .networks import build, load_checkpoint, recipe_for
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
        _print_json(out)
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


# ----------------------------------------------------------------------------- export
def _cmd_export(args) -> int:
    from . import nir as nir_mod
    from .datasets import load
    from .networks import build, load_checkpoint, recipe_for
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
        _print_json({"path": str(path), "nodes": rows, "edges": [list(e) for e in g.edges]})
        return 0
    print(f"{args.network} on {args.device} ({args.coding} coding){'' if args.checkpoint else ' (fresh network)'} "
          f"as NIR (dt {g.metadata.get('dt')} s):")
    for r in rows:
        print(f"  {r['node']:<14} {r['type']:<8} {r['shape']}")
    print(f"wrote {path}")
    return 0


# ----------------------------------------------------------------------------- parser
def _training_args(a: argparse.ArgumentParser, *, rules: tuple, epochs: int, resume: bool = False) -> None:
    """Arguments shared by `train` and `compare-coding`."""
    a.add_argument("--network", required=not resume, metavar="NAME|PATH")
    a.add_argument("--device", required=not resume, metavar="NAME|PATH")
    a.add_argument("--rule", default="hybrid", choices=rules)
    a.add_argument("--dataset", default="digits", choices=("digits", "mnist", "fashion-mnist", "cifar10"))
    a.add_argument("--data-dir", default=None, help="folder with the dataset files (default data/<dataset>)")
    a.add_argument("--epochs", type=_POS, default=epochs)
    a.add_argument("--seed", type=_SEED, default=0)
    a.add_argument("--lr", type=_float(0, lo_open=True), default=0.1)
    a.add_argument("--batch", type=_POS, default=8)
    a.add_argument("--steps", type=_POS, default=None, help="time steps of the spike codings (default: the recipe's)")
    a.add_argument("--limit-train", type=_POS, default=None, help="use only the first N training samples")
    a.add_argument("--limit-test", type=_POS, default=None)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neurosal", description="Simulate analog in-memory-computing "
                                "neuromorphic hardware and train networks on it.")
    sub = p.add_subparsers(dest="command", required=True)
    p.commands = sub.choices                         # command name -> its parser

    dev = sub.add_parser("devices", help="the device library (model cards)")
    dsub = dev.add_subparsers(dest="devices_command", required=True)
    a = dsub.add_parser("list", help="list the shipped device cards")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=_cmd_devices_list)
    a = dsub.add_parser("show", help="show one device card (name or path)")
    a.add_argument("device", metavar="NAME|PATH")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=_cmd_devices_show)
    a = dsub.add_parser("curve", help="nominal potentiation/depression curve of a device")
    a.add_argument("device", metavar="NAME|PATH")
    a.add_argument("--pulses", type=_int(1, 100_000), required=True, help="pulses up from Gmin, then the same number down")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=_cmd_devices_curve)
    a = dsub.add_parser("plot", help="plot conductance vs pulse number with the C2C spread")
    a.add_argument("devices", nargs="+", metavar="NAME|PATH")
    a.add_argument("-o", "--output", default="curves.png")
    a.add_argument("--samples", type=_POS, default=200, help="noisy cycles drawn for the spread")
    a.add_argument("--seed", type=_SEED, default=0)
    a.set_defaults(func=_cmd_devices_plot)

    for kind, what in (("networks", "network recipes (networks/*.toml)"),
                       ("periphery", "periphery cost cards (devices/periphery/*.toml)"),
                       ("coprocessor", "co-processor cost cards (devices/coprocessor/*.toml)")):
        cp = sub.add_parser(kind, help=f"the shipped {what}")
        csub = cp.add_subparsers(dest=f"{kind}_command", required=True)
        a = csub.add_parser("list", help=f"list the shipped {what}")
        a.add_argument("--json", action="store_true")
        a.set_defaults(func=_cmd_cards_list, kind=kind)
        a = csub.add_parser("show", help="show one card (name or path), every field resolved")
        a.add_argument("name", metavar="NAME|PATH")
        a.add_argument("--json", action="store_true")
        a.set_defaults(func=_cmd_cards_show, kind=kind)

    s = sub.add_parser("simulate", help="run a network on dataset samples and record spikes / traces to HDF5")
    s.add_argument("--network", required=True, metavar="NAME|PATH", help="network recipe (e.g. mlp-64-100-10)")
    s.add_argument("--device", required=True, metavar="NAME|PATH", help="device card of the crossbars")
    s.add_argument("--coding", default="spike", choices=("rate", "spike", "latency"))
    s.add_argument("--steps", type=_POS, default=None, help="time steps (default: the recipe's; rate coding: 1)")
    s.add_argument("--samples", type=_POS, default=100, help="test samples to simulate")
    s.add_argument("--dataset", default="digits", choices=("digits", "mnist", "fashion-mnist", "cifar10"))
    s.add_argument("--data-dir", default=None, help="folder with the dataset files (default data/<dataset>)")
    s.add_argument("--record", default="spikes", help="comma list of spikes,v,current ('' = nothing)")
    s.add_argument("--record-samples", type=_POS, default=16, help="how many of the samples to record")
    s.add_argument("--out", default=None, help="recording file (.h5); nothing is written without it")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    s.add_argument("--checkpoint", default=None, help="trained network checkpoint (default: fresh network)")
    s.add_argument("--seed", type=_SEED, default=0)
    s.add_argument("--batch", type=_POS, default=256)
    s.add_argument("--path", default="auto", choices=("auto", "event", "dense"),
                   help="crossbar reads: event-driven, dense, or chosen by activity")
    s.add_argument("--json", action="store_true")
    _run_args(s)
    _config_args(s)
    s.set_defaults(func=_cmd_simulate)

    t = sub.add_parser("train", help="train a network on the simulated chip with an on-chip learning rule")
    _training_args(t, rules=("bp", "dfa", "hybrid", "verify"), epochs=1, resume=True)
    t.add_argument("--coding", default="rate", choices=("rate", "spike", "latency"))
    t.add_argument("--rounding", default="stochastic", choices=("stochastic", "round"),
                   help="gradient -> pulses rounding of bp and dfa")
    t.add_argument("--array", default="all", choices=("all", "first"),
                   help="layers on crossbars: all, or only the first (the rest in software)")
    t.add_argument("--readback", type=_int(0), default=0, metavar="K",
                   help="hybrid: every K steps read the arrays (counted verify reads) to re-anchor the "
                        "controller's estimates; 0 (default): pure open loop")
    t.add_argument("--crop", type=_POS, default=None, metavar="N", help="input transform: the central NxN pixels")
    t.add_argument("--binarize", type=_float(0, hi=1, hi_open=True), default=None, metavar="T", help="input transform: pixels > T -> 1, else 0")
    t.add_argument("--attach", default=None, metavar="STAGES|none",
                   help="SAnet: stages with an attention block, e.g. 1,3 (default: the recipe's)")
    t.add_argument("--attach-epochs", type=_int(0), default=None, metavar="K",
                   help="SAnet: attention for the first K epochs, then detached (the backbone trains on alone)")
    t.add_argument("--attach-gate", type=_float(0), default=None, metavar="T",
                   help="SAnet: keep a block only where the fresh chip's stage output deviates from the "
                        "ideal-device value by more than T (relative)")
    t.add_argument("--out", default=None, help="checkpoint file (chip + network + rule state), written at the end "
                   "of every epoch")
    t.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    t.add_argument("--log", default=None, metavar="FILE.csv|FILE.jsonl",
                   help="append each epoch's loss, accuracy, pulses, energy and seconds as it ends")
    t.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="the same per-epoch figures as TensorBoard scalars (needs the tensorboard package)")
    t.add_argument("-o", "--output", default=None, metavar="PNG", help="learning curves (loss and accuracy per epoch)")
    t.add_argument("--resume", default=None, metavar="CKPT",
                   help="continue the run that wrote CKPT up to --epochs (options left out take its values; "
                        "--out defaults to CKPT)")
    t.add_argument("--json", action="store_true")
    _run_args(t)
    _config_args(t)
    t.set_defaults(func=_cmd_train, parser=t)

    cc = sub.add_parser("compare-coding", help="the same network trained rate- and spike-coded: accuracy and events")
    _training_args(cc, rules=("bp", "hybrid", "verify"), epochs=2)
    cc.add_argument("-o", "--output", default=None, help="PNG plot of the comparison")
    cc.add_argument("--json", action="store_true")
    _run_args(cc)
    cc.set_defaults(func=_cmd_compare)

    k = sub.add_parser("cost", help="energy, latency and area per layer and phase, from the events of a run")
    k.add_argument("--network", required=True, metavar="NAME|PATH")
    k.add_argument("--device", required=True, metavar="NAME|PATH")
    k.add_argument("--coding", default="rate", choices=("rate", "spike", "latency"))
    k.add_argument("--rule", default="bp", choices=("bp", "dfa", "hybrid", "verify", "none"),
                   help="learning rule of the measured training step ('none': inference only)")
    k.add_argument("--steps", type=_POS, default=None, help="time steps of the spike codings (default: the recipe's)")
    k.add_argument("--dataset", default="digits", choices=("digits", "mnist", "fashion-mnist", "cifar10"))
    k.add_argument("--data-dir", default=None)
    k.add_argument("--batch", type=_POS, default=16, help="samples measured (inference) and the training batch")
    k.add_argument("--seed", type=_SEED, default=0)
    k.add_argument("--checkpoint", default=None, help="trained network (default: a fresh one)")
    k.add_argument("--periphery", default="isaac-32nm", metavar="NAME|PATH", help="periphery cost card")
    k.add_argument("--coprocessor", default="puma-vfu-32nm", metavar="NAME|PATH", help="co-processor cost card")
    k.add_argument("-o", "--output", default=None, help="PNG breakdown plot (stacked by component and phase)")
    k.add_argument("--json", action="store_true")
    _run_args(k)
    k.set_defaults(func=_cmd_cost)

    i = sub.add_parser("inspect", help="what is in a recording; --raster draws a spike raster")
    i.add_argument("file")
    i.add_argument("--json", action="store_true")
    i.add_argument("--raster", action="store_true", help="draw a spike raster PNG (see -o, --sample)")
    i.add_argument("-o", "--output", default="raster.png")
    i.add_argument("--sample", type=_int(0), default=0, help="which recorded sample the raster shows")
    i.add_argument("--allow-incomplete", action="store_true", help="read a file whose run did not finish")
    i.set_defaults(func=_cmd_inspect)

    w = sub.add_parser("sweep", help="run a study's trials (local workers or Ray), one JSON line per finished trial")
    w.add_argument("study", help="study file (.toml), e.g. studies/kwon-hybrid.toml")
    w.add_argument("--out", required=True, help="results file (.jsonl); a rerun skips the trials already in it")
    w.add_argument("--workers", type=_POS, default=1, help="local worker processes (threads: the cores divided)")
    w.add_argument("--ray", default=None, metavar="auto|local|ADDRESS",
                   help="run the trials as Ray tasks (pip install 'neurosal[ray]')")
    w.add_argument("--gpus-per-trial", type=_float(0), default=0.0, help="Ray: GPU fraction per trial")
    w.add_argument("--variant", default=None, help="a [variants.NAME] of the study (e.g. full)")
    w.add_argument("--data-dir", default=None, help="dataset folder for every trial (replaces the study's)")
    w.add_argument("--json", action="store_true")
    _run_args(w)
    _config_args(w)
    w.set_defaults(func=_cmd_sweep)

    rp = sub.add_parser("report", help="tables (mean ± SE over seeds) and plots from a sweep's results")
    rp.add_argument("results", help="results file (.jsonl) written by neurosal sweep")
    rp.add_argument("-o", "--output", default=None, metavar="DIR", help="write <study>.md, .csv and PNG plots here")
    rp.add_argument("--x", default=None, metavar="AXIS", help="the plots' x axis (default: a nonideality level, "
                    "else the device, else the axis with the most values)")
    rp.add_argument("--json", action="store_true")
    rp.set_defaults(func=_cmd_report)

    gc = sub.add_parser("gradcam", help="Grad-CAM per residual stage, with and without each attention block "
                        "(off chip)")
    _checkpoint_args(gc, network_help="a SAnet / ResNet recipe")
    gc.add_argument("--samples", type=_POS, default=256, help="test samples the figures average over")
    gc.add_argument("--stages", default="1,2,3", help="residual stages to map (comma list of 1, 2, 3)")
    gc.add_argument("--target", default="predicted", choices=("predicted", "label"), help="class whose score is mapped")
    gc.add_argument("--batch", type=_POS, default=128)
    gc.add_argument("--seed", type=_SEED, default=0)
    gc.add_argument("-o", "--output", default=None, help="PNG grid (input, then each stage with and without its block)")
    gc.add_argument("--json", action="store_true")
    _run_args(gc)
    gc.set_defaults(func=_cmd_gradcam)

    ev = sub.add_parser("evaluate", help="accuracy at times after programming, as the devices drift")
    _checkpoint_args(ev)
    ev.add_argument("--coding", default="rate", choices=("rate", "spike", "latency"))
    ev.add_argument("--limit-test", type=_POS, default=None)
    ev.add_argument("--times", default="1,60,3600,86400,2592000", help="seconds after programming, comma list")
    ev.add_argument("--repeats", type=_POS, default=3, help="read-noise draws per time")
    ev.add_argument("--compensation", default="none", help="none, global, or both as none,global")
    ev.add_argument("--seed", type=_SEED, default=0)
    ev.add_argument("-o", "--output", default=None, help="PNG: accuracy against time after programming")
    ev.add_argument("--json", action="store_true")
    _run_args(ev)
    ev.set_defaults(func=_cmd_evaluate)

    ex = sub.add_parser("export", help="write a (trained) network as a NIR graph")
    _checkpoint_args(ex, required=False)
    ex.add_argument("--coding", default="spike", choices=("spike",), help="NIR holds spiking networks")
    ex.add_argument("--format", default="nir", choices=("nir",))
    ex.add_argument("--seed", type=_SEED, default=0)
    ex.add_argument("-o", "--output", required=True, help="the NIR file (.nir, HDF5)")
    ex.add_argument("--json", action="store_true")
    ex.set_defaults(func=_cmd_export)

    d = sub.add_parser("demo", help="the main job on the embedded digits dataset")
    d.add_argument("--out-dir", default="runs")
    d.add_argument("--epochs", type=_POS, default=3)
    d.add_argument("--seed", type=_SEED, default=0)
    _run_args(d)
    d.set_defaults(func=_cmd_demo)
    return p


def _checkpoint_args(a: argparse.ArgumentParser, *, required: bool = True, network_help: str = "") -> None:
    """A trained chip and its data: --network, --device, --checkpoint, --dataset, --data-dir."""
    a.add_argument("--network", required=True, metavar="NAME|PATH", help=network_help or None)
    a.add_argument("--device", required=True, metavar="NAME|PATH")
    a.add_argument("--checkpoint", required=required,
                   help="the trained chip (neurosal train --out)" + ("" if required else "; default: a fresh one"))
    a.add_argument("--dataset", default="digits", choices=("digits", "mnist", "fashion-mnist", "cifar10"),
                   help="the data (the network's input size follows it)")
    a.add_argument("--data-dir", default=None)


def _config_args(a: argparse.ArgumentParser) -> None:
    a.add_argument("--config", default=None, metavar="FILE.toml",
                   help="options from a TOML file (as --print-config writes it); options given here win")
    a.add_argument("--print-config", action="store_true", help="print the resolved options as TOML and stop")


def _run_args(a: argparse.ArgumentParser) -> None:
    """Where the simulation runs: accelerator and CPU threads (every command that simulates)."""
    a.add_argument("--accelerator", default="auto", metavar="auto|cpu|cuda|cuda:N",
                   help="hardware that runs the simulation (auto: a GPU when there is one); "
                        "--device is the memory device on the chip")
    a.add_argument("--threads", type=_POS, default=None, metavar="N",
                   help="CPU threads (default: the cores not already busy, at least 1)")


_CONFIG_COMMANDS = ("train", "simulate", "sweep")
_NOT_CONFIG = ("func", "parser", "command", "config", "print_config", "json", "kind")


def _options(parser: argparse.ArgumentParser) -> dict:
    """dest -> action of a (sub)parser's options."""
    return {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}


def _config_argv(command: str, path: str) -> list:
    """The options a ``--config`` TOML file sets, as command-line arguments (given before the
    user's own, which therefore win)."""
    from .cards import load_toml
    sub = build_parser().commands[command]
    opts = _options(sub)
    data = load_toml(path)
    out = []
    for k, v in data.items():
        dest = k.replace("-", "_")
        if dest not in opts or dest in _NOT_CONFIG:
            raise CardError(path, k, "not an option of `neurosal " + command + "`; allowed: " +
                            ", ".join(sorted(d for d in opts if d not in _NOT_CONFIG)))
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


def _print_config(args, sub: argparse.ArgumentParser) -> None:
    """The fully resolved options of this command as TOML (``--config`` reads it back)."""
    print(f"# neurosal {args.command}: the resolved options (neurosal {args.command} --config FILE reads them)")
    for dest in _options(sub):
        if dest in _NOT_CONFIG:
            continue
        v = getattr(args, dest, None)
        if v is None:
            print(f"# {dest} = (not set: the default applies)")
        else:
            print(f"{dest} = {_toml_value(v)}")


def main(argv=None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in _CONFIG_COMMANDS and any(a == "--config" or a.startswith("--config=") for a in argv):
            i = next(i for i, a in enumerate(argv) if a == "--config" or a.startswith("--config="))
            path = argv[i].split("=", 1)[1] if "=" in argv[i] else (argv[i + 1] if i + 1 < len(argv) else "")
            rest = argv[:i] + argv[i + (1 if "=" in argv[i] else 2):]
            argv = [rest[0]] + _config_argv(rest[0], path) + rest[1:]
    except CardError as exc:
        print(f"neurosal: bad config: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if getattr(args, "print_config", False):
        _print_config(args, parser.commands[args.command])
        return 0
    try:
        if hasattr(args, "threads"):
            from .accel import resolve, set_threads
            set_threads(args.threads)
            args.accelerator = resolve(args.accelerator)        # a bad name fails before any work
        if getattr(args, "output", None) and args.command in ("compare-coding", "cost", "gradcam", "train", "export",
                                                                       "evaluate"):
            from .files import check_output                      # a plot's -o, checked before the work too
            check_output(args.output, overwrite=True, what="-o")
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        from .files import kept
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
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
