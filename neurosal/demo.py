"""``neurosal demo``: what ``make demo`` runs, on the embedded ``digits`` dataset.

1. SAnet on the chip: ``sanet-resnet8`` (analog ResNet-8 + squeeze-excite attention on the
   co-processor) and the plain ``resnet8`` backbone, trained on-chip with the hybrid rule on
   the ``moderate`` device; accuracy with and without attention, and the attention's digital
   work.
2. Rate vs spike coding: ``mlp-64-100-10`` trained both ways on the same device; accuracy,
   time steps, spikes and synaptic events per test sample.
3. A recording: the spike-coded network simulated on test samples, written to
   ``runs/demo.h5`` (SONATA), with its spike raster.

Plots go to ``runs/``: ``device_curves.png``, ``compare_coding.png``, ``raster.png``.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .datasets import load

DEVICES = ("ideal", "mild", "moderate", "severe", "ag-a-si", "extreme-nonlinear")


def load_digits_split(seed: int = 0, test_fraction: float = 0.25):
    """The scikit-learn digits (1797 8x8 images, 10 classes), pixels scaled to [0, 1]."""
    d = load("digits", seed=seed, test_fraction=test_fraction)
    return d.x_train, d.y_train, d.x_test, d.y_test


def run_demo(out_dir: Path = Path("runs"), epochs: int = 3, seed: int = 0, device: str = "moderate") -> int:
    from .compare import _test_events, plot_comparison
    from .learning import train
    from .plots import plot_device_curves, plot_raster
    from . import recording
    from .recording import Recorder
    from .simulator import Probe, Simulator, encoder_for
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    print(f"neurosal demo: on-chip training on digits with the '{device}' device (seed {seed})\n")

    # 1. SAnet with and without attention ------------------------------------------------
    print(f"[1/3] SAnet: analog ResNet-8 on crossbars, hybrid rule, {epochs} epochs")
    sa = {}
    for name in ("sanet-resnet8", "resnet8"):
        res, net, data = train(name, device, rule="hybrid", coding="rate", epochs=epochs, seed=seed, lr=0.1,
                               batch=16, return_net=True)
        cp = net.coprocessor.counters.as_dict()
        sa[name] = (res, cp)
    print(f"\n{'network':<16} {'attention':<10} {'test accuracy':>13} {'pulses':>12} {'digital MACs':>13} "
          f"{'values to co-processor':>23}")
    for name, (res, cp) in sa.items():
        attn = "SE" if name.startswith("sanet") else "none"
        print(f"{name:<16} {attn:<10} {res['test_accuracy']:>13.3f} {res['pulses']:>12,d} {cp['macs']:>13,d} "
              f"{cp['transfers_in']:>23,d}")

    # 2. rate vs spike coding ---------------------------------------------------------------
    print(f"\n[2/3] rate vs spike coding: mlp-64-100-10, hybrid rule, {epochs} epochs")
    rows, spiking = [], None
    for coding in ("rate", "spike"):
        res, net, data = train("mlp-64-100-10", device, rule="hybrid", coding=coding, epochs=epochs, seed=seed,
                               lr=0.1, batch=8, steps=16 if coding == "spike" else None, return_net=True)
        ev = _test_events(net, data.x_test, data.y_test, coding, res["steps"], seed)
        rows.append({"coding": coding, "steps": res["steps"], "test_accuracy": ev["accuracy"],
                     "spikes_per_sample": ev["spikes_per_sample"],
                     "synaptic_events_per_sample": ev["synaptic_events_per_sample"],
                     "adc_conversions_per_sample": ev["adc_conversions_per_sample"],
                     "train_pulses": res["pulses"]})
        if coding == "spike":
            spiking = (net, res["steps"])
    print(f"\n{'coding':<8} {'T':>3} {'test accuracy':>13} {'spikes/sample':>14} {'synaptic events/sample':>23}")
    for r in rows:
        sp = "-" if r["spikes_per_sample"] is None else f"{r['spikes_per_sample']:.0f}"
        print(f"{r['coding']:<8} {r['steps']:>3} {r['test_accuracy']:>13.3f} {sp:>14} "
              f"{r['synaptic_events_per_sample']:>23,.0f}")
    cmp_png = plot_comparison({"network": "mlp-64-100-10", "device": device, "dataset": "digits", "rule": "hybrid",
                               "epochs": epochs, "codings": rows}, out_dir / "compare_coding.png")

    # 3. a recording of the trained spiking network ----------------------------------------
    print("\n[3/3] recording the spike-coded network on 64 test samples")
    net, T = spiking
    x, y = data.x_test[:64], data.y_test[:64]
    h5 = out_dir / "demo.h5"
    pops = {"input": net.n_in, **{layer.name: layer.n_out for layer in net.layers}}
    with Recorder(h5, dt=1e-3, steps=T, populations=pops, samples=range(16), labels=y[:16].tolist(),
                  overwrite=True, metadata={"coding": "spike", "seed": seed, "dataset": "digits",
                                            "network": net.meta.get("recipe", {}),
                                            "devices": {"crossbar": net.layers[0].crossbar.device.card.to_dict()},
                                            "config": {"demo": True, "epochs": epochs, "rule": "hybrid"}}) as rec:
        rec.declare_spikes(list(pops))
        with torch.no_grad():
            Simulator(net).run(encoder_for("rate", x, T, seed=seed), steps=T, recorder=rec,
                               probes=[Probe("input", ("spikes",), range(16))] +
                               [Probe(n, ("spikes", "v"), range(16)) for n in net.layer_names()])
    raster = plot_raster(recording.open(h5), out_dir / "raster.png", sample=0)
    curves = plot_device_curves(list(DEVICES), out_dir / "device_curves.png")
    print(f"\nwrote {h5} (open it with `neurosal inspect {h5}`), {raster}, {cmp_png} and {curves}")
    print(f"done in {time.perf_counter() - t_start:.0f} s")
    return 0
