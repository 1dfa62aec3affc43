"""``neurosal cost``: energy, latency and area per layer and phase, from the events of a run.

May import: :mod:`neurosal.experiments` (the measurement), :mod:`neurosal.cost`.
"""

from __future__ import annotations

from ..cost import PHASES, plot_breakdown
from ..experiments import measure
from ..learning import rule_names
from .common import DATASETS, POS, SEED, print_json, run_args

def _cmd_cost(args) -> int:
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
        print_json(out)
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


def add_parsers(sub) -> None:
    """Register this group's commands."""
    k = sub.add_parser("cost", help="energy, latency and area per layer and phase, from the events of a run")
    k.add_argument("--network", required=True, metavar="NAME|PATH")
    k.add_argument("--device", required=True, metavar="NAME|PATH")
    k.add_argument("--coding", default="rate", choices=("rate", "spike", "latency"))
    k.add_argument("--rule", default="bp", choices=(*rule_names(), "none"),
                   help="learning rule of the measured training step ('none': inference only)")
    k.add_argument("--steps", type=POS, default=None, help="time steps of the spike codings (default: the recipe's)")
    k.add_argument("--dataset", default="digits", choices=DATASETS)
    k.add_argument("--data-dir", default=None)
    k.add_argument("--batch", type=POS, default=16, help="samples measured (inference) and the training batch")
    k.add_argument("--seed", type=SEED, default=0)
    k.add_argument("--checkpoint", default=None, help="trained network (default: a fresh one)")
    k.add_argument("--periphery", default="isaac-32nm", metavar="NAME|PATH", help="periphery cost card")
    k.add_argument("--coprocessor", default="puma-vfu-32nm", metavar="NAME|PATH", help="co-processor cost card")
    k.add_argument("-o", "--output", default=None, help="PNG breakdown plot (stacked by component and phase)")
    k.add_argument("--json", action="store_true")
    run_args(k)
    k.set_defaults(func=_cmd_cost)
