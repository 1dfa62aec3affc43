"""``neurosal devices``, ``networks``, ``periphery``, ``coprocessor``: the shipped cards, listed and shown.

May import: :mod:`neurosal.devices`, :mod:`neurosal.networks`, :mod:`neurosal.cost` (cards), :mod:`neurosal.plots`.
"""

from __future__ import annotations

from ..cards import to_dict
from ..cost import device_energies, list_coprocessors, list_periphery, load_coprocessor, load_periphery
from ..devices import Device, list_devices
from ..networks import list_networks, load_network
from ..plots import plot_device_curves
from .common import POS, SEED, int_type, print_json

def _cmd_devices_list(args) -> int:
    rows = []
    for name in list_devices():
        c = Device(name).card
        rows.append(dict(name=name, model=c.model, levels=c.levels, g_min=c.g_min, g_max=c.g_max,
                         on_off=c.on_off, nl_up=c.nl_up, nl_down=c.nl_down, a_up=c.a_up, a_down=c.a_down,
                         c2c=c.noise.c2c, read=c.noise.read, d2d_bounds=c.variation.bounds,
                         stuck=c.faults.stuck_min + c.faults.stuck_max, drift_nu=c.drift.nu,
                         description=c.description))
    if args.json:
        print_json(rows)
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
    d = Device(args.device)
    info = d.describe()
    e = device_energies(d.card, load_periphery())
    info["cost"] = {"write_pj_per_pulse": e["write_j"] * 1e12, "read_fj_per_cell": e["read_j"] * 1e15,
                    "pulse_s": e["pulse_s"],
                    "from": ("the card's [energy] table" if not any(e["derived"].values()) else
                             "derived from [pulse]: V^2 x mean G x width; 2 V_read^2 x mean G x t_read (isaac-32nm)")}
    info["symmetry_point"] = d.symmetry_point()
    if args.json:
        print_json(info)
        return 0
    for k, v in info.items():
        if isinstance(v, dict):
            print(f"[{k}]")
            for kk, vv in v.items():
                if isinstance(vv, dict):
                    vv = ", ".join(f"{a} {b:.4g}" if isinstance(b, float) else f"{a} {b}" for a, b in vv.items())
                print(f"  {kk:<14} {vv}")
        else:
            print(f"{k:<16} {v}")
    return 0


def _cmd_devices_curve(args) -> int:
    up, down = Device(args.device).curve(args.pulses)
    out = dict(device=args.device, pulses=args.pulses, units="S", potentiation=up.tolist(),
               depression=down.tolist())
    if args.json:
        print_json(out)
    else:
        print("pulse  potentiation (S)  depression (S)")
        for i, (a, b) in enumerate(zip(up, down)):
            print(f"{i:>5}  {a:>16.5g}  {b:>14.5g}")
    return 0


def _cmd_devices_plot(args) -> int:
    out = plot_device_curves(args.devices, args.output, samples=args.samples, seed=args.seed)
    print(f"wrote {out}")
    return 0


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
    c = load_network(name)
    shape = ("-".join(str(int(v)) for v in c.sizes) if c.kind in ("mlp", "charge-mlp") else
             f"depth {c.depth}, width {c.width}" if c.kind == "resnet" else f"width {c.width}")
    return dict(name=name, kind=c.kind, shape=shape, neuron=c.neuron,
                attention=c.attention if c.kind == "resnet" else "-", steps=c.steps, description=c.description)


def _cmd_cards_list(args) -> int:
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
        print_json(rows)
        return 0
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(f"{c:<{widths[c]}}" for c in cols) + "  description")
    for r in rows:
        print("  ".join(f"{str(r[c]):<{widths[c]}}" for c in cols) + f"  {r['description']}")
    return 0


def _cmd_cards_show(args) -> int:
    load = {"networks": load_network, "periphery": load_periphery, "coprocessor": load_coprocessor}[args.kind]
    d = to_dict(load(args.name))
    if args.json:
        print_json(d)
    else:
        _print_card(d)
    return 0


def add_parsers(sub) -> None:
    """Register this group's commands."""
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
    a.add_argument("--pulses", type=int_type(1, 100_000), required=True, help="pulses up from Gmin, then the same number down")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=_cmd_devices_curve)
    a = dsub.add_parser("plot", help="plot conductance vs pulse number with the C2C spread")
    a.add_argument("devices", nargs="+", metavar="NAME|PATH")
    a.add_argument("-o", "--output", default="curves.png")
    a.add_argument("--samples", type=POS, default=200, help="noisy cycles drawn for the spread")
    a.add_argument("--seed", type=SEED, default=0)
    a.set_defaults(func=_cmd_devices_plot)
    for kind, what in (("networks", "network recipes (neurosal/cards/networks)"),
                       ("periphery", "periphery cost cards (neurosal/cards/devices/periphery)"),
                       ("coprocessor", "co-processor cost cards (neurosal/cards/devices/coprocessor)")):
        cp = sub.add_parser(kind, help=f"the shipped {what}")
        csub = cp.add_subparsers(dest=f"{kind}_command", required=True)
        a = csub.add_parser("list", help=f"list the shipped {what}")
        a.add_argument("--json", action="store_true")
        a.set_defaults(func=_cmd_cards_list, kind=kind)
        a = csub.add_parser("show", help="show one card (name or path), every field resolved")
        a.add_argument("name", metavar="NAME|PATH")
        a.add_argument("--json", action="store_true")
        a.set_defaults(func=_cmd_cards_show, kind=kind)
