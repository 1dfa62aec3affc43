"""Checkpoints: a network with its chips, written atomically and loaded without running code.

A checkpoint holds the recipe, coding and data shape, the digital parameters, and every
crossbar's full state (conductances, device-to-device draws, RNG state, counters, device
card), in the order of the network's analog units; loading checks that it fits the network,
the coding, the device card and the data it is given, and names what differs.

May import: :mod:`neurosal.crossbar`, :mod:`neurosal.accel`, :mod:`neurosal.files`.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import torch

from ..accel import Generators
from ..crossbar import analog_layers
from ..files import atomic

__all__ = ["save_checkpoint", "load_checkpoint"]


def _xbar_layers(net) -> list:
    """The network's analog layers, in the order its checkpoint stores their crossbars."""
    return [m for _, m in net.analog_units()]


def _mirror_keys(net) -> set:
    """State-dict keys of the analog weight mirrors (the crossbars hold the truth)."""
    analog = {id(m) for m in analog_layers(net)}
    return {f"{name}.weight" if name else "weight" for name, m in net.named_modules() if id(m) in analog}


def save_checkpoint(net, path: str | Path, **extra) -> None:
    """Save a network with its chips: recipe, coding, data shape, digital parameters and every
    crossbar's full state (conductances, device-to-device draws, RNG state, counters, device
    card). The file is written under a temporary name, ``fsync``'d and renamed over ``path``:
    a crash or a full disk leaves the earlier checkpoint as it was
    (:class:`~neurosal.files.OutputError`)."""
    xbars = [layer.crossbar.state_dict() for layer in _xbar_layers(net)]
    digital = {k: v for k, v in net.state_dict().items() if k not in _mirror_keys(net)}
    buf = io.BytesIO()    # serialized in memory: a full disk is then a plain OSError on write
    attached = net.attention_state()
    if attached is not None:                      # which attention blocks the network runs with
        extra.setdefault("attached", attached)
    # each array's digital output gain (set by the data-driven calibration of spike-coded recipes)
    gains = [float(layer.weight_scale) for layer in _xbar_layers(net)]
    torch.save({"format": "neurosal-checkpoint-1", "meta": net.meta, "digital": digital, "crossbars": xbars,
                "gains": gains, "rngs": _module_rngs(net), **extra}, buf)
    with atomic(path, what="checkpoint") as tmp:
        with open(tmp, "wb") as fh:
            fh.write(buf.getbuffer())


def _module_rngs(net) -> dict:
    """The random streams modules keep outside their state dicts (input spikes, random
    offsets): ``{"<module>.<attribute>": state}``."""
    out = {}
    for name, m in net.named_modules():
        for k, v in vars(m).items():
            if isinstance(v, torch.Generator):
                out[f"{name}.{k}"] = v.get_state()
            elif isinstance(v, Generators):
                out[f"{name}.{k}"] = v.state_dict()
    return out


def _load_module_rngs(net, rngs: dict) -> None:
    for name, m in net.named_modules():
        for k, v in vars(m).items():
            st = rngs.get(f"{name}.{k}")
            if st is None:
                continue
            if isinstance(v, torch.Generator) and isinstance(st, torch.Tensor):
                v.set_state(st)
            elif isinstance(v, Generators) and isinstance(st, dict):
                v.load_state_dict(st)


def _card_name(d) -> str:
    return str(d.get("name", "?")) if isinstance(d, dict) else "?"


def _as_list(v) -> list:
    return [int(x) for x in v] if isinstance(v, (list, tuple)) else [int(v)]


def _differs(a: dict, b: dict) -> list:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _check_fits(p: Path, ck: dict, net, layers) -> None:
    """A checkpoint runs only on the network, coding, device and data shape it was made for;
    anything else is an error that names both (never a silent run on the wrong chip)."""
    meta = ck.get("meta") if isinstance(ck.get("meta"), dict) else {}
    mine = getattr(net, "meta", {}) or {}
    a, b = meta.get("recipe"), mine.get("recipe")
    if isinstance(a, dict) and isinstance(b, dict) and a != b:
        if _card_name(a) != _card_name(b):
            raise ValueError(f"{p}: the checkpoint holds network {_card_name(a)!r}, not {_card_name(b)!r} "
                             f"(--network); pass --network {_card_name(a)}")
        raise ValueError(f"{p}: the checkpoint's recipe {_card_name(a)!r} differs from the one given in "
                         f"{', '.join(_differs(a, b))}")
    if "coding" in meta and "coding" in mine and meta["coding"] != mine["coding"]:
        raise ValueError(f"{p}: the checkpoint was trained with coding {meta['coding']!r}, not {mine['coding']!r} "
                         f"(--coding); pass --coding {meta['coding']}")
    for key, what in (("input_shape", "inputs of shape"), ("classes", "classes:")):
        if meta.get(key) is not None and mine.get(key) is not None and _as_list(meta[key]) != _as_list(mine[key]):
            raise ValueError(f"{p}: the checkpoint was trained on {what} {meta[key]}, these data have {mine[key]} "
                             "(--dataset / --crop)")
    for layer, sd in zip(layers, ck["crossbars"]):
        theirs, ours = sd.get("card") if isinstance(sd, dict) else None, layer.crossbar.device.card.to_dict()
        if isinstance(theirs, dict) and theirs != ours:
            if _card_name(theirs) != _card_name(ours):
                raise ValueError(f"{p}: the checkpoint's chip has device {_card_name(theirs)!r}, not "
                                 f"{_card_name(ours)!r} (--device); pass --device {_card_name(theirs)}")
            raise ValueError(f"{p}: the checkpoint's device card {_card_name(theirs)!r} differs from the card "
                             f"{_card_name(ours)!r} given now in {', '.join(_differs(theirs, ours))}")


def load_checkpoint(net, path: str | Path) -> dict:
    """Restore a checkpoint written by :func:`save_checkpoint` into ``net`` (same recipe)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such checkpoint file")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)     # tensors and plain data: no code runs
    except Exception as exc:  # torch raises several types for a corrupt file
        raise ValueError(f"{p}: not a readable neurosal checkpoint ({exc})") from None
    if not isinstance(ck, dict) or ck.get("format") != "neurosal-checkpoint-1":
        raise ValueError(f"{p}: not a neurosal checkpoint (no 'format' = 'neurosal-checkpoint-1')")
    layers = _xbar_layers(net)
    if not isinstance(ck.get("crossbars"), list) or not isinstance(ck.get("digital"), dict):
        raise ValueError(f"{p}: a damaged neurosal checkpoint (no 'crossbars' list or 'digital' table)")
    _check_fits(p, ck, net, layers)
    if len(ck["crossbars"]) != len(layers):
        raise ValueError(f"{p}: checkpoint has {len(ck['crossbars'])} crossbar layers, the network {len(layers)}")
    gains = ck.get("gains")               # absent in checkpoints written before gains were calibrated
    if gains is not None and (not isinstance(gains, list) or len(gains) != len(layers)
                              or not all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in gains)):
        raise ValueError(f"{p}: a damaged neurosal checkpoint ('gains' must list one positive gain per crossbar layer)")
    for i, (layer, sd) in enumerate(zip(layers, ck["crossbars"])):
        layer.crossbar.load_state_dict(sd)
        if gains is not None:
            layer.weight_scale = gains[i]
            layer._sync()
    missing = net.load_state_dict(ck["digital"], strict=False)
    bad = list(missing.unexpected_keys)
    lost = [k for k in missing.missing_keys if k not in _mirror_keys(net)]
    if bad or lost:
        raise ValueError(f"{p}: checkpoint does not fit this network (unexpected {bad}, missing {lost})")
    if isinstance(ck.get("rngs"), dict):
        _load_module_rngs(net, ck["rngs"])
    if net.attention_state() is not None and isinstance(ck.get("attached"), list):
        net.attach([int(v) for v in ck["attached"]])
    return ck
