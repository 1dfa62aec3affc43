"""Command-line interface: ``neurosal <command> ...`` (``--help`` on every level)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from .cards import CardError


def _print_json(obj) -> None:
    def default(o):
        if isinstance(o, float) and math.isinf(o):
            return None
        if hasattr(o, "tolist"):
            return o.tolist()
        raise TypeError(type(o))
    print(json.dumps(obj, indent=2, default=default, allow_nan=False))


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
    from .devices import Device
    d = Device(args.device)
    info = d.describe()
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
    if args.pulses < 1:
        raise SystemExit("neurosal devices curve: --pulses must be >= 1")
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


# ----------------------------------------------------------------------------- demo
def _cmd_demo(args) -> int:
    from .demo import run_demo
    return run_demo(out_dir=Path(args.out_dir), epochs=args.epochs, seed=args.seed)


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neurosal", description="Simulate analog in-memory-computing "
                                "neuromorphic hardware and train networks on it.")
    sub = p.add_subparsers(dest="command", required=True)

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
    a.add_argument("--pulses", type=int, required=True, help="pulses up from Gmin, then the same number down")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=_cmd_devices_curve)
    a = dsub.add_parser("plot", help="plot conductance vs pulse number with the C2C spread")
    a.add_argument("devices", nargs="+", metavar="NAME|PATH")
    a.add_argument("-o", "--output", default="curves.png")
    a.add_argument("--samples", type=int, default=200, help="noisy cycles drawn for the spread")
    a.add_argument("--seed", type=int, default=0)
    a.set_defaults(func=_cmd_devices_plot)

    d = sub.add_parser("demo", help="the main job on the embedded digits dataset")
    d.add_argument("--out-dir", default="runs")
    d.add_argument("--epochs", type=int, default=3)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_cmd_demo)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CardError as exc:
        print(f"neurosal: bad card: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:
        print(f"neurosal: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
