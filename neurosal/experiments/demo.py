"""``neurosal demo``: what ``make demo`` runs, on the embedded ``digits`` dataset.

1. SAnet on the chip: ``sanet-resnet8`` (analog ResNet-8 + squeeze-excite attention on the
   co-processor) and the plain ``resnet8`` backbone, trained on-chip with the hybrid rule on
   the ``moderate`` device; accuracy with attention, without it (the plain backbone, and
   SAnet detached after training), energy per inference and the attention's digital share.
2. Rate vs spike coding: ``mlp-64-100-10`` trained both ways on the same device; accuracy,
   time steps, spikes and synaptic events per test sample.
3. A recording: the spike-coded network simulated on test samples, written to
   ``runs/demo.h5`` (SONATA), with its spike raster.

Energies come from the cost ledger of the runs (:mod:`neurosal.cost`). Plots go to ``runs/``:
``device_curves.png``, ``compare_coding.png``, ``raster.png``, ``cost_breakdown.png``.

May import: anything below the command line.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .. import recording
from ..cost import Ledger, cost_report, plot_breakdown
from ..datasets import load
from ..engine import Probe, Simulator, encoder_for, evaluate
from ..plots import plot_device_curves, plot_raster
from ..recording import Recorder
from ..training import train
from .compare import plot_comparison, test_events
from .costing import measure

DEVICES = ("ideal", "mild", "moderate", "severe", "ag-a-si", "extreme-nonlinear")


def load_digits_split(seed: int = 0, test_fraction: float = 0.25):
    """The scikit-learn digits (1797 8x8 images, 10 classes), pixels scaled to [0, 1]."""
    d = load("digits", seed=seed, test_fraction=test_fraction)
    return d.x_train, d.y_train, d.x_test, d.y_test


def run_demo(out_dir: Path = Path("runs"), epochs: int = 3, seed: int = 0, device: str = "moderate",
             accelerator=None) -> int:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    print(f"neurosal demo: on-chip training on digits with the '{device}' device (seed {seed})\n")

    # 1. SAnet with and without attention ------------------------------------------------
    print(f"[1/3] SAnet: analog ResNet-8 on crossbars, hybrid rule, {epochs} epochs")
    sa = {}
    for name in ("sanet-resnet8", "resnet8"):
        res, net, data = train(name, device, rule="hybrid", coding="rate", epochs=epochs, seed=seed, lr=0.1,
                               batch=16, return_net=True, accelerator=accelerator)
        cp = net.coprocessor.counters.as_dict()
        sa[name] = (res, cp)
        if name == "sanet-resnet8":
            sanet, sanet_data = net, data
    # attach for training, then detach: the backbone alone on the test set
    sanet.detach()
    det_led = Ledger(sanet, samples=len(sanet_data.y_test))
    with det_led.phase("forward"):
        det_acc = evaluate(sanet, sanet_data.x_test, sanet_data.y_test, coding="rate", steps=1, seed=seed)
    det = cost_report(det_led)
    sanet.attach()
    print(f"\n{'network':<16} {'attention':<22} {'test accuracy':>13} {'pulses':>12} {'digital MACs':>13} "
          f"{'nJ/inference':>13} {'digital %':>9}")
    for name, (res, cp) in sa.items():
        attn = "SE, every stage" if name.startswith("sanet") else "none"
        ci = res["cost"]["inference"]
        print(f"{name:<16} {attn:<22} {res['test_accuracy']:>13.3f} {res['pulses']:>12,d} {cp['macs']:>13,d} "
              f"{ci['energy_per_sample_j'] * 1e9:>13.4g} "
              f"{100 * ci['digital_energy_j'] / (ci['analog_energy_j'] + ci['digital_energy_j']):>9.1f}")
    print(f"{'sanet-resnet8':<16} {'SE, detached for test':<22} {det_acc:>13.3f} {'':>12} {0:>13,d} "
          f"{det.energy_j / det.samples * 1e9:>13.4g} {100 * det.digital_energy_j / det.energy_j:>9.1f}")
    bd = plot_breakdown(measure(None, None, coding="rate", rule="hybrid", batch=16, net=sanet, data=sanet_data,
                                seed=seed), out_dir / "cost_breakdown.png",
                        title=f"sanet-resnet8 trained on {device} ({epochs} epochs): cost breakdown")

    # 2. rate vs spike coding ---------------------------------------------------------------
    print(f"\n[2/3] rate vs spike coding: mlp-64-100-10, hybrid rule, {epochs} epochs")
    rows, spiking = [], None
    for coding in ("rate", "spike"):
        res, net, data = train("mlp-64-100-10", device, rule="hybrid", coding=coding, epochs=epochs, seed=seed,
                               lr=0.1, batch=8, steps=16 if coding == "spike" else None, return_net=True,
                               accelerator=accelerator)
        ev = test_events(net, data.x_test, data.y_test, coding, res["steps"], seed)
        rows.append({"coding": coding, "steps": res["steps"], "test_accuracy": ev["accuracy"],
                     "spikes_per_sample": ev["spikes_per_sample"],
                     "synaptic_events_per_sample": ev["synaptic_events_per_sample"],
                     "adc_conversions_per_sample": ev["adc_conversions_per_sample"],
                     "energy_per_sample_j": ev["energy_per_sample_j"], "train_pulses": res["pulses"]})
        if coding == "spike":
            spiking = (net, res["steps"])
    print(f"\n{'coding':<8} {'T':>3} {'test accuracy':>13} {'spikes/sample':>14} {'synaptic events/sample':>23} "
          f"{'nJ/inference':>13}")
    for r in rows:
        sp = "-" if r["spikes_per_sample"] is None else f"{r['spikes_per_sample']:.0f}"
        print(f"{r['coding']:<8} {r['steps']:>3} {r['test_accuracy']:>13.3f} {sp:>14} "
              f"{r['synaptic_events_per_sample']:>23,.0f} {r['energy_per_sample_j'] * 1e9:>13.4g}")
    cmp_png = plot_comparison({"network": "mlp-64-100-10", "device": device, "dataset": "digits", "rule": "hybrid",
                               "epochs": epochs, "seed": seed, "codings": rows}, out_dir / "compare_coding.png")

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
    print(f"\nwrote {h5} (open it with `neurosal inspect {h5}`), {raster}, {cmp_png}, {bd} and {curves}")
    print("energies: cost cards isaac-32nm and puma-vfu-32nm (`neurosal cost` for the full breakdown)")
    print(f"done in {time.perf_counter() - t_start:.0f} s")
    return 0
