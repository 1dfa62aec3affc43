r"""NIR (the Neuromorphic Intermediate Representation) out of and into the simulated chip.

**Export** (:func:`to_nir`): a spike-coded layer chain (:class:`~neurosal.engine.Network`)
becomes ``Input -> Affine -> LIF -> ... -> Affine -> LI|LIF -> Output``:

* each synapse is an ``Affine`` whose weight ``[out, in]`` is the effective weight as read from
  the chip, :math:`s\,(G^+ - G^-)/G_{ref}` (no read noise), and whose bias is the digital bias;
  the layer's gain ``s``, its ADC range and the device card go into the node's metadata;
* a LIF layer (:math:`\tau\dot v = v_{leak} - v + I`) is ``nir.LIF(tau, r = 1, v_leak,
  v_threshold, v_reset)`` with ``tau`` **in seconds** (norse 1.1.0's ``to_nir`` writes
  :math:`\tau` divided by ``dt``; this does not); a leaky-integrator readout (``v_th = inf``)
  is ``nir.LI(tau, r = 1, v_leak)``;
* the graph's metadata holds neurosal's run settings (``dt``, steps, coding, recipe, device
  card, periphery) as JSON.

What NIR cannot express is refused with :class:`NIRError`, naming it: charge-domain neurons
(reversal potentials, time-to-first-spike phases), rate coding (a bounded analog activation,
not a neuron model), convolutional recipes (SAnet/ResNet: batch norm and residual adds). The
ADC (quantization of the column outputs) has no NIR node: the exported graph is the ideal
computation the chip approximates; its bits and range are in the metadata.

**Import** (:func:`from_nir`): a chain ``Input -> (Affine|Linear -> LIF|LI|IF)+ -> Output``
is built on crossbars of ``device`` and its weights are *programmed* by write-and-verify (pulses
and verify reads counted, :class:`ProgramReport`). Per layer the gain ``s`` is the one in the
node's metadata (a neurosal export) or ``max |W| / 0.9``; the chip is programmed to ``W / s``.
Rules: ``r != 1`` is folded into the weights and bias (:math:`I = r\,(Wx + b)`); every node of
a layer must share one ``tau``, ``v_threshold``, ``v_reset`` and ``v_leak`` (a neurosal layer has
scalar parameters); ``IF`` (:math:`\dot v = r I`, no leak) is run as a LIF with
:math:`\tau = 10^6\,dt` and input scaled by :math:`\tau`, whose leak per step is
:math:`10^{-6}` of the potential.

May import: :mod:`neurosal.engine`, :mod:`neurosal.crossbar`, :mod:`neurosal.neurons`, :mod:`neurosal.files`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import nir
import numpy as np
import torch

from ..crossbar import AnalogLinear
from ..engine import Layer, Network
from ..files import atomic
from ..neurons import LIFNeurons, LIFParameters

__all__ = ["NIRError", "to_nir", "from_nir", "ProgramReport", "write", "read"]


class NIRError(ValueError):
    """A network or graph that the other side cannot express."""


#: why a neuron kind has no NIR node
_NO_NIR = {"rate": "rate coding is a bounded analog activation, not a spiking neuron; NIR holds spiking networks: "
                   "export the spike-coded build (--coding spike)",
           "charge": "charge-domain neurons (reversal potentials, time-to-first-spike phases) have no NIR node"}


def _lif_of(layer):
    neu = layer.neurons
    if neu.kind != "lif":
        raise NIRError(f"layer {layer.name}: " + _NO_NIR.get(neu.kind, f"{type(neu).__name__} has no NIR node"))
    return neu


def to_nir(net, *, dt: Optional[float] = None):
    """The NIR graph of a spike-coded layer chain (see the module doc)."""
    if net.structure != "chain":
        raise NIRError(f"{type(net).__name__}: NIR export covers layer chains (mlp recipes); convolutional "
                       "recipes with batch norm and residual adds are not exported")
    nodes = {"input": nir.Input(input_type=np.array([net.n_in]))}
    edges, prev = [], "input"
    devices = {}
    for layer in net.layers:
        neu = _lif_of(layer)
        syn = layer.synapse
        xb = layer.crossbar
        with torch.no_grad():
            if xb is not None:
                w = (xb.weights().t() * syn.weight_scale).detach().double().cpu().numpy()
            else:
                w = syn.weight.detach().double().cpu().numpy()
            b = (syn.bias.detach().double().cpu().numpy() if syn.bias is not None
                 else np.zeros(layer.n_out))
        meta = {"on_chip": xb is not None}
        if xb is not None:
            meta.update(weight_scale=float(syn.weight_scale), adc_bits=-1 if xb.adc_bits is None else int(xb.adc_bits),
                        dac_bits=-1 if xb.dac_bits is None else int(xb.dac_bits), adc_range=float(xb.adc_range),
                        tile=np.array(xb.tile), device=xb.device.card.name)
            devices[layer.name] = xb.device.card.to_dict()
        aff = nir.Affine(weight=w, bias=b)
        aff.metadata.update(meta)
        p, n = neu.p, layer.n_out
        full = lambda v: np.full(n, float(v))  # noqa: E731
        if math.isinf(p.v_th):                       # a leaky-integrator readout: never fires
            cell = nir.LI(tau=full(p.tau_mem), r=full(1.0), v_leak=full(p.v_leak))
        else:
            cell = nir.LIF(tau=full(p.tau_mem), r=full(1.0), v_leak=full(p.v_leak), v_threshold=full(p.v_th),
                           v_reset=full(p.v_reset))
        nodes[layer.name], nodes[f"{layer.name}.neurons"] = aff, cell
        edges += [(prev, layer.name), (layer.name, f"{layer.name}.neurons")]
        prev = f"{layer.name}.neurons"
    nodes["output"] = nir.Output(output_type=np.array([net.n_out]))
    edges.append((prev, "output"))
    step = float(dt if dt is not None else net.layers[0].neurons.dt)
    meta = {"producer": "neurosal", "dt": step,
            "neurosal": json.dumps({"recipe": net.meta.get("recipe"), "coding": net.meta.get("coding"),
                                    "steps": net.meta.get("steps"), "decoder": net.decoder, "devices": devices})}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


def write(path, net, **kw) -> Path:
    """Export ``net`` to a NIR file (HDF5), atomically."""
    g = to_nir(net, **kw)
    p = Path(path)
    with atomic(p, what="NIR graph") as tmp:
        nir.write(tmp, g)
    return p


def read(path):
    """Read a NIR file (a named error for a missing or unreadable one)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such NIR file")
    try:
        return nir.read(p)
    except Exception as exc:  # noqa: BLE001 - h5py / nir raise many kinds for a bad file
        raise NIRError(f"{p}: not a readable NIR graph ({type(exc).__name__}: {exc})") from None


@dataclass
class ProgramReport:
    """What programming an imported graph cost: pulses and verify reads, per layer and in all."""

    layers: dict
    pulses: int
    verify_reads: int
    max_error: float          # largest |w - target| after programming (effective weight units)


def _chain(graph) -> list:
    """The nodes from Input to Output along the graph's single path."""
    nxt = {}
    for a, b in graph.edges:
        if a in nxt:
            raise NIRError(f"node {a!r} has several successors; neurosal imports a feed-forward chain")
        nxt[a] = b
    starts = [k for k, v in graph.nodes.items() if isinstance(v, nir.Input)]
    if len(starts) != 1:
        raise NIRError(f"the graph has {len(starts)} Input nodes; neurosal imports a chain with one")
    order, k = [], starts[0]
    while k is not None:
        if k in order:
            raise NIRError(f"the graph has a cycle through {k!r}; neurosal imports feed-forward chains")
        order.append(k)
        k = nxt.get(k)
    return [(k, graph.nodes[k]) for k in order]


def _scalar(node, name: str, field: str) -> float:
    v = np.asarray(getattr(node, field), dtype=np.float64).ravel()
    if v.size == 0 or not np.all(v == v[0]):
        raise NIRError(f"node {name!r}: {field} differs between neurons ({v.min():g} .. {v.max():g}); a neurosal "
                       "layer has one value per layer")
    return float(v[0])


def from_nir(graph, *, device="ideal", dt: Optional[float] = None, seed: int = 0,
             tolerance: Optional[float] = None, periphery: Optional[dict] = None):
    """Build ``graph`` (a ``nir.NIRGraph`` or a path) on crossbars of ``device`` and program its
    weights by write-and-verify; returns ``(network, ProgramReport)``. ``dt``: the time step
    (default: the graph's ``dt`` metadata, else 1 ms). ``periphery``: ``tile``, ``adc_bits``,
    ``dac_bits`` (default: the node's metadata, else no ADC/DAC and 128x128 tiles).
    ``tolerance``: write-and-verify's target, in normalized weight units (default: one nominal
    pulse step of the device, ``1 / Pmax``: a finer target than the device can step to would
    make write-and-verify oscillate until its pulse limit)."""
    if isinstance(graph, (str, Path)):
        graph = read(graph)
    step = float(dt if dt is not None else graph.metadata.get("dt", 1e-3))
    chain = _chain(graph)
    if not isinstance(chain[-1][1], nir.Output):
        raise NIRError(f"the chain from Input ends at {chain[-1][0]!r}, not at an Output node")
    body = chain[1:-1]
    if len(body) % 2 or not body:
        raise NIRError("neurosal imports (Affine|Linear, LIF|LI|IF) pairs between Input and Output; got "
                       + " -> ".join(type(n).__name__ for _, n in body))
    layers, report, total_p, total_v, worst = [], {}, 0, 0, 0.0
    for i in range(0, len(body), 2):
        (sname, syn), (cname, cell) = body[i], body[i + 1]
        if not isinstance(syn, (nir.Affine, nir.Linear)):
            raise NIRError(f"node {sname!r}: {type(syn).__name__} where neurosal expects Affine or Linear")
        if not isinstance(cell, (nir.LIF, nir.LI, nir.IF)):
            raise NIRError(f"node {cname!r}: {type(cell).__name__} has no neurosal neuron (LIF, LI and IF import)")
        w = np.asarray(syn.weight, dtype=np.float64)
        if w.ndim != 2:
            raise NIRError(f"node {sname!r}: weight of shape {w.shape}, expected [out, in]")
        b = np.asarray(syn.bias, dtype=np.float64) if isinstance(syn, nir.Affine) else np.zeros(w.shape[0])
        r = np.asarray(cell.r, dtype=np.float64).reshape(-1)
        if r.size not in (1, w.shape[0]):
            raise NIRError(f"node {cname!r}: r has {r.size} values for {w.shape[0]} neurons")
        if isinstance(cell, nir.IF):
            tau = 1e6 * step                         # the stated rule: an IF is a LIF with negligible leak
            w, b = w * (r[:, None] * tau), b * r * tau
            params = LIFParameters(tau_mem=tau, v_th=_scalar(cell, cname, "v_threshold"),
                                   v_reset=_scalar(cell, cname, "v_reset") if cell.v_reset is not None else 0.0,
                                   alpha=10.0)
        else:
            w, b = w * r[:, None], b * r
            tau = _scalar(cell, cname, "tau")
            v_leak = _scalar(cell, cname, "v_leak")
            if isinstance(cell, nir.LI):
                params = LIFParameters(tau_mem=tau, v_th=math.inf, v_reset=0.0, v_leak=v_leak, alpha=10.0)
            else:
                params = LIFParameters(tau_mem=tau, v_th=_scalar(cell, cname, "v_threshold"),
                                       v_reset=_scalar(cell, cname, "v_reset") if cell.v_reset is not None else 0.0,
                                       v_leak=v_leak, alpha=10.0)
        md = dict(syn.metadata or {})
        per = dict(periphery or {})
        bits = lambda k: (None if int(md[k]) < 0 else int(md[k])) if k in md else None  # noqa: E731
        tile = tuple(int(v) for v in np.asarray(per.get("tile", md.get("tile", (128, 128)))).ravel())
        n_out, n_in = w.shape
        # the gain: a neurosal export's own, else the largest weight at 90 % of the pair's range
        # (a weight at the very end of the range needs both devices at their bounds)
        scale = float(md.get("weight_scale", 0.0)) or float(np.abs(w).max()) / 0.9 or 1.0
        lin = AnalogLinear(n_in, n_out, bias=True, device=device, tile=tile,
                           dac_bits=per.get("dac_bits", bits("dac_bits")), adc_bits=per.get("adc_bits", bits("adc_bits")),
                           adc_range=float(per.get("adc_range", md.get("adc_range", 12.0))), weight_scale=scale,
                           seed=seed + 101 * (i // 2))
        target = torch.as_tensor(w.T / scale, dtype=torch.float32)
        if float(target.abs().max()) > 1.0 + 1e-9:
            raise NIRError(f"node {sname!r}: weights up to {np.abs(w).max():g} exceed the gain {scale:g} the "
                           "metadata gives (|W / s| must be <= 1 on a crossbar)")
        tol = tolerance if tolerance is not None else 1.0 / float(lin.crossbar.device.card.pmax)
        res = lin.crossbar.program(target, tolerance=tol)
        with torch.no_grad():
            lin.bias.copy_(torch.as_tensor(b, dtype=lin.bias.dtype))
        lin._sync()
        err = float((lin.crossbar.weights() - target).abs().max()) * scale
        report[sname] = {"pulses": int(res.pulses), "verify_reads": int(res.verify_reads), "max_error": err,
                         "converged": float(res.converged), "tolerance": tol * scale}
        total_p, total_v, worst = total_p + int(res.pulses), total_v + int(res.verify_reads), max(worst, err)
        layers.append(Layer(lin, LIFNeurons(params, dt=step), name=sname))
    meta = json.loads(graph.metadata.get("neurosal", "{}")) if isinstance(graph.metadata.get("neurosal"), str) else {}
    readout_li = math.isinf(layers[-1].neurons.p.v_th)
    net = Network(layers, decoder="max_membrane" if readout_li else meta.get("decoder", "count"),
                  name=str(graph.metadata.get("name", "nir-import")),
                  meta={"recipe": meta.get("recipe"), "coding": "spike", "steps": meta.get("steps"), "seed": seed,
                        "imported_from": "nir"})
    return net, ProgramReport(report, total_p, total_v, worst)
