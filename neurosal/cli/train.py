"""``neurosal train`` and ``neurosal compare-coding``: on-chip training from the command line.

Their options are generated from :class:`~neurosal.training.TrainConfig` (flags, types, ranges,
choices, defaults and help), the one place a training option is defined.

May import: :mod:`neurosal.training`, :mod:`neurosal.experiments`, :mod:`neurosal.plots`.
"""

from __future__ import annotations

import sys

from ..experiments import compare_coding, plot_comparison
from ..plots import plot_history
from ..training import TrainConfig, options, resume_config, train
from .common import calibration_line, config_args, print_json, run_args, train_args

#: the options of compare-coding (a subset of TrainConfig's), and its own defaults and rules
_COMPARE = ("network", "device", "rule", "dataset", "data_dir", "epochs", "seed", "lr", "batch", "steps",
            "limit_train", "limit_test", "accelerator")


def _cmd_train(args) -> int:
    names = [o.name for o in options() if o.cli]
    if args.resume:
        # options left at their defaults take the checkpoint's values; one given that differs
        # from the checkpoint's is an error (train() names it)
        saved = resume_config(args.resume)["config"]
        for o in options():
            k = o.name
            if o.cli and o.identity and not o.resume_free and k in saved and getattr(args, k) == \
                    args.parser.get_default(k):
                setattr(args, k, saved[k])
        if args.out is None:
            args.out = args.resume
    elif args.network is None or args.device is None:
        raise ValueError("train: --network and --device are required (or --resume CKPT)")
    r = train(TrainConfig(**{k: getattr(args, k) for k in names}), progress=not args.json)
    r = r.as_dict()
    if args.output:
        r["plot"] = str(plot_history(r, args.output))
    if args.json:
        print_json(r)
        return 0
    print(f"{r['network']} on {r['device']}{' (first layer only)' if args.array == 'first' else ''}, rule {r['rule']} ({r['rounding']} rounding), {r['coding']} coding, "
          f"{r['dataset']}, {r['epochs']} epoch(s), {r['seconds']:.1f} s on {r['accelerator']}"
          + (f" ({r['threads']} thread{'s' if r['threads'] != 1 else ''})" if r['accelerator'] == "cpu" else ""))
    for h in r["history"]:
        print(f"  epoch {h['epoch']:>3}: loss {h['loss']:.4f}  test accuracy {h['test_accuracy']:.4f}")
    extra = f", software accuracy before programming {r['software_accuracy']:.4f}" if "software_accuracy" in r else ""
    print(f"test accuracy {r['test_accuracy']:.4f}{extra}")
    if "gains" in r:
        print(calibration_line(r["gains"]))
    if "firing" in r:
        print("firing (spikes per neuron and step, final test run): " +
              ", ".join(f"{k} {v:.3g}" for k, v in r["firing"].items()))
    for w in r.get("warnings", ()):
        print(f"warning: {w}", file=sys.stderr)
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


def _list(text: str, what: str, allowed=None, cast=str) -> list:
    vals = [v.strip() for v in text.split(",") if v.strip()]
    try:
        vals = [cast(v) for v in vals]
    except ValueError:
        raise ValueError(f"{what} {text!r}: not a comma-separated list of {cast.__name__}s") from None
    bad = [v for v in vals if allowed is not None and v not in allowed]
    if bad or not vals:
        raise ValueError(f"{what} {text!r}: allowed: a comma-separated list of {', '.join(map(str, allowed or ()))}")
    return vals


def _cmd_compare(args) -> int:
    codings = _list(args.codings, "--codings", ("rate", "spike", "latency"))
    seeds = _list(args.seeds, "--seeds", cast=int) if args.seeds else None
    if seeds and any(v < 0 for v in seeds):
        raise ValueError(f"--seeds {args.seeds!r}: seeds are integers >= 0")
    r = compare_coding(args.network, args.device, dataset=args.dataset, data_dir=args.data_dir, rule=args.rule,
                       epochs=args.epochs, steps=args.steps, seed=args.seed, lr=args.lr, batch=args.batch,
                       limit_train=args.limit_train, limit_test=args.limit_test, progress=not args.json,
                       accelerator=args.accelerator, codings=codings, seeds=seeds)
    if args.output:
        r["plot"] = str(plot_comparison(r, args.output))
    if args.json:
        print_json(r)
        return 0
    many = isinstance(r["seed"], list)
    print(f"{r['network']} on {r['device']}, {r['dataset']}, rule {r['rule']}, {r['epochs']} epoch(s)"
          + (f", mean +- SE over seeds {', '.join(map(str, r['seed']))}" if many else ""))
    print(f"{'coding':<8} {'T':>4} {'accuracy':>16} {'spikes/sample':>14} {'syn. events/sample':>19} "
          f"{'ADC conv./sample':>17} {'nJ/inference':>13} {'us/inference':>13} {'train pulses':>13} "
          f"{'train energy':>13}")
    for c in r["codings"]:
        sp = "-" if c["spikes_per_sample"] is None else f"{c['spikes_per_sample']:.0f}"
        acc = f"{c['test_accuracy']:.4f}" + (f" +- {c['test_accuracy_se']:.4f}" if many else "")
        print(f"{c['coding']:<8} {c['steps']:>4} {acc:>16} {sp:>14} "
              f"{c['synaptic_events_per_sample']:>19,.0f} {c['adc_conversions_per_sample']:>17,.0f} "
              f"{c['energy_per_sample_j'] * 1e9:>13.4g} {c['latency_per_sample_s'] * 1e6:>13.4g} "
              f"{c['train_pulses']:>13,d} {c['train_energy_j']:>11.3g} J")
    print(f"energy from the test run's events with the cost cards {r['periphery']} and {r['coprocessor']}")
    if args.output:
        print(f"wrote {r['plot']}")
    return 0


def add_parsers(sub) -> None:
    """Register this group's commands."""
    t = sub.add_parser("train", help="train a network on the simulated chip with an on-chip learning rule")
    train_args(t)
    t.add_argument("-o", "--output", default=None, metavar="PNG", help="learning curves (loss and accuracy per epoch)")
    t.add_argument("--json", action="store_true")
    run_args(t, accelerator=False)             # --accelerator is a TrainConfig option
    config_args(t)
    t.set_defaults(func=_cmd_train, parser=t)

    cc = sub.add_parser("compare-coding", help="the same network trained with each coding: accuracy, events, energy, latency")
    train_args(cc, names=_COMPARE, defaults={"epochs": 2}, choices={"rule": ("bp", "hybrid", "verify", "offchip")},
               required=("network", "device"))
    cc.add_argument("--codings", default="rate,spike", metavar="LIST",
                    help="codings side by side, e.g. rate,spike,latency (default rate,spike)")
    cc.add_argument("--seeds", default=None, metavar="LIST",
                    help="seeds, e.g. 0,1,2: every figure as mean +- standard error (default: --seed alone)")
    cc.add_argument("-o", "--output", default=None, help="PNG plot of the comparison")
    cc.add_argument("--json", action="store_true")
    run_args(cc, accelerator=False)
    cc.set_defaults(func=_cmd_compare)

