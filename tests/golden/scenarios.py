"""Golden runs: command lines whose outputs a refactor must leave identical, bit for bit.

Each scenario is a `neurosal` command line, run in-process through the CLI (the interface that
a layout change does not touch) on one CPU thread with fixed seeds. What it prints (``--json``)
and what it writes (checkpoints, recordings, NIR files, plots excluded) are reduced to plain
numbers and SHA-256 digests of every tensor and dataset, and compared with ``golden.json``.

``python tests/golden/scenarios.py --write`` regenerates ``golden.json`` (only ever on purpose:
a change of the numbers is a change of the physics, and the commit says why) and ``machine.json``.

Bit-identical holds on one machine only: the CPU's vector kernels (``torch.backends.cpu.
get_cpu_capability()``) and the torch build fix the order of float sums, and a training run
amplifies a last-bit difference (measured: the same commit on two x86 machines gave the demo's
SE-ResNet 0.915 and 0.958). ``machine.json`` names the machine the golden file was pinned on; on
another one the test still compares bits (often they agree: same vector kernels), and where they
differ it compares the shape of every result (keys, types, lengths, exit codes) and says so. Re-pin on a new machine from the commit before a refactor, then refactor.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CARDS = HERE / "cards"
GOLDEN = HERE / "golden.json"
MACHINE = HERE / "machine.json"

_RUN = ["--threads", "1", "--accelerator", "cpu"]
_SMALL = ["--dataset", "digits", "--limit-train", "240", "--limit-test", "90"]

#: (name, argv, output files to digest) -- {tmp} is a scratch folder, {cards} the golden cards
SCENARIOS = [
    # ------------------------------------------------------------------ train: every rule
    ("train-bp-rate", ["train", "--network", "mlp-64-100-10", "--device", "moderate", "--rule", "bp",
                       "--coding", "rate", "--epochs", "2", "--seed", "3", *_SMALL, "--out", "{tmp}/bp.pt"],
     ["bp.pt"]),
    ("train-bp-round-ag", ["train", "--network", "mlp-64-100-10", "--device", "ag-a-si", "--rule", "bp",
                           "--rounding", "round", "--lr", "0.3", *_SMALL]),
    ("train-dfa-rate", ["train", "--network", "mlp-64-100-10", "--device", "{cards}/expvar.toml", "--rule", "dfa",
                        "--epochs", "2", *_SMALL, "--out", "{tmp}/dfa.pt"], ["dfa.pt"]),
    ("train-hybrid-readback", ["train", "--network", "mlp-64-100-10", "--device", "extreme-nonlinear",
                               "--rule", "hybrid", "--readback", "4", *_SMALL, "--out", "{tmp}/hyb.pt"],
     ["hyb.pt"]),
    ("train-hybrid-first", ["train", "--network", "mlp-64-100-10", "--device", "extreme-nonlinear",
                            "--rule", "hybrid", "--array", "first", *_SMALL]),
    ("train-verify", ["train", "--network", "mlp-64-100-10", "--device", "severe", "--rule", "verify", *_SMALL,
                      "--out", "{tmp}/ver.pt"], ["ver.pt"]),
    # ------------------------------------------------------------------ train: device families
    ("train-hybrid-soft", ["train", "--network", "mlp-64-100-10", "--device", "{cards}/soft.toml",
                           "--rule", "hybrid", *_SMALL]),
    ("train-hybrid-power", ["train", "--network", "mlp-64-100-10", "--device", "{cards}/power.toml",
                            "--rule", "hybrid", *_SMALL]),
    ("train-bp-power", ["train", "--network", "mlp-64-100-10", "--device", "{cards}/power.toml", "--rule", "bp",
                        *_SMALL]),
    ("train-hybrid-table", ["train", "--network", "mlp-64-100-10", "--device", "{cards}/table.toml",
                            "--rule", "hybrid", *_SMALL, "--out", "{tmp}/tab.pt"], ["tab.pt"]),
    ("train-bp-table", ["train", "--network", "mlp-64-100-10", "--device", "{cards}/table.toml", "--rule", "bp",
                        *_SMALL]),
    ("train-hybrid-halflin", ["train", "--network", "mlp-64-100-10", "--device", "{cards}/halflin.toml",
                              "--rule", "hybrid", *_SMALL]),
    ("train-bp-halflin", ["train", "--network", "mlp-64-100-10", "--device", "{cards}/halflin.toml",
                          "--rule", "bp", *_SMALL]),
    ("train-hybrid-ideal", ["train", "--network", "mlp-64-100-10", "--device", "ideal", "--rule", "hybrid",
                            *_SMALL]),
    # ------------------------------------------------------------------ train: codings
    ("train-bp-spike", ["train", "--network", "mlp-64-100-10", "--device", "ag-a-si", "--rule", "bp",
                        "--coding", "spike", "--steps", "8", *_SMALL, "--out", "{tmp}/spike.pt"], ["spike.pt"]),
    ("train-hybrid-latency", ["train", "--network", "mlp-64-100-10", "--device", "mild", "--rule", "hybrid",
                              "--coding", "latency", "--steps", "8", *_SMALL, "--out", "{tmp}/lat.pt"], ["lat.pt"]),
    # ------------------------------------------------------------------ train: network kinds
    ("train-sanet-hybrid-gate", ["train", "--network", "sanet-resnet8", "--device", "severe", "--rule", "hybrid",
                                 "--dataset", "digits", "--limit-train", "64", "--limit-test", "32", "--batch", "16",
                                 "--attach-gate", "0.05", "--out", "{tmp}/sanet.pt"], ["sanet.pt"]),
    ("train-sanet-dfa-epochs", ["train", "--network", "sanet-resnet8", "--device", "moderate", "--rule", "dfa",
                                "--dataset", "digits", "--limit-train", "48", "--limit-test", "32", "--batch", "16",
                                "--epochs", "2", "--attach", "1,3", "--attach-epochs", "1"]),
    ("train-resnet-spike-bp", ["train", "--network", "resnet8", "--device", "mild", "--rule", "bp", "--coding",
                               "spike", "--steps", "3", "--dataset", "digits", "--limit-train", "32",
                               "--limit-test", "16", "--batch", "16", "--out", "{tmp}/rspike.pt"], ["rspike.pt"]),
    ("train-charge-mlp", ["train", "--network", "charge-mlp-784-400-400-10", "--device", "moderate", "--rule", "bp",
                          "--coding", "latency", "--dataset", "digits", "--limit-train", "96", "--limit-test", "48",
                          "--batch", "16", "--out", "{tmp}/cmlp.pt"], ["cmlp.pt"]),
    ("train-charge-mlp-hybrid", ["train", "--network", "charge-mlp-784-400-400-10", "--device", "ag-a-si",
                                 "--rule", "hybrid", "--coding", "latency", "--dataset", "digits",
                                 "--limit-train", "64", "--limit-test", "32", "--batch", "16"]),
    ("train-vgg-charge", ["train", "--network", "vgg7-charge", "--device", "ideal", "--rule", "hybrid", "--coding",
                          "latency", "--dataset", "digits", "--limit-train", "32", "--limit-test", "16",
                          "--batch", "16"]),
    # ------------------------------------------------------------------ simulate
    ("simulate-spike", ["simulate", "--network", "mlp-64-100-10", "--device", "ag-a-si", "--coding", "spike",
                        "--steps", "8", "--samples", "40", "--batch", "16", "--record", "spikes,v,current",
                        "--record-samples", "6", "--checkpoint", "{tmp}/spike.pt", "--out", "{tmp}/s.h5"],
     ["s.h5"]),
    ("simulate-latency", ["simulate", "--network", "mlp-64-100-10", "--device", "mild", "--coding", "latency",
                          "--steps", "8", "--samples", "30", "--checkpoint", "{tmp}/lat.pt", "--record", "spikes,v",
                          "--out", "{tmp}/l.h5"], ["l.h5"]),
    ("simulate-rate-fresh", ["simulate", "--network", "mlp-64-100-10", "--device", "{cards}/expvar.toml",
                             "--coding", "rate", "--samples", "50", "--record", "v", "--path", "dense",
                             "--out", "{tmp}/r.h5"], ["r.h5"]),
    ("simulate-event", ["simulate", "--network", "mlp-64-100-10", "--device", "severe", "--coding", "spike",
                        "--steps", "12", "--samples", "20", "--path", "event", "--record", ""]),
    # ------------------------------------------------------------------ cost
    ("cost-sanet-hybrid", ["cost", "--network", "sanet-resnet8", "--device", "moderate", "--rule", "hybrid",
                           "--batch", "8"]),
    ("cost-mlp-dfa", ["cost", "--network", "mlp-784-400-400-10", "--device", "ag-a-si", "--rule", "dfa",
                      "--batch", "8"]),
    ("cost-spike-ckpt", ["cost", "--network", "mlp-64-100-10", "--device", "ag-a-si", "--coding", "spike",
                         "--checkpoint", "{tmp}/spike.pt", "--rule", "none", "--batch", "8"]),
    ("cost-vgg-bp", ["cost", "--network", "vgg7-charge", "--device", "moderate", "--coding", "latency",
                     "--rule", "bp", "--batch", "4"]),
    ("cost-verify", ["cost", "--network", "mlp-64-100-10", "--device", "severe", "--rule", "verify",
                     "--batch", "8", "--periphery", "isaac-32nm", "--coprocessor", "horowitz-fp32-45nm"]),
    ("cost-resnet-spike", ["cost", "--network", "resnet8", "--device", "mild", "--coding", "spike", "--steps", "3",
                           "--rule", "bp", "--batch", "4"]),
    # ------------------------------------------------------------------ the rest
    ("compare-coding", ["compare-coding", "--network", "mlp-64-100-10", "--device", "moderate", "--epochs", "1",
                        "--steps", "8", *_SMALL]),
    ("evaluate-drift", ["evaluate", "--network", "mlp-64-100-10", "--device", "severe", "--checkpoint",
                        "{tmp}/ver.pt", "--coding", "rate", "--limit-test", "60", "--times", "1,3600,86400",
                        "--repeats", "2", "--compensation", "none,global"]),
    ("gradcam", ["gradcam", "--network", "sanet-resnet8", "--device", "severe", "--checkpoint", "{tmp}/sanet.pt",
                 "--samples", "16", "--batch", "8"]),
    ("export-nir", ["export", "--network", "mlp-64-100-10", "--device", "ag-a-si", "--checkpoint", "{tmp}/spike.pt",
                    "-o", "{tmp}/net.nir"], ["net.nir"]),
    ("devices-list", ["devices", "list"]),
    *[(f"devices-show-{n}", ["devices", "show", n]) for n in
      ("ideal", "mild", "moderate", "severe", "ag-a-si", "taox-hfox", "pcmo", "alox-hfo2", "epiram",
       "extreme-nonlinear")],
    *[(f"devices-show-{n}", ["devices", "show", f"{{cards}}/{n}.toml"]) for n in
      ("soft", "power", "table", "expvar", "halflin")],
    *[(f"devices-curve-{n}", ["devices", "curve", f"{{cards}}/{n}.toml", "--pulses", "12"]) for n in
      ("soft", "power", "table", "expvar", "halflin")],
    ("devices-curve-ag", ["devices", "curve", "ag-a-si", "--pulses", "100"]),
]

_VOLATILE = ("seconds", "threads", "host", "versions", "path", "out", "plot", "raster")


def _clean(obj, tmp: str):
    """JSON output without what varies from run to run (time, threads, paths)."""
    if isinstance(obj, dict):
        return {k: _clean(v, tmp) for k, v in obj.items() if k not in _VOLATILE and not k.endswith("seconds")}
    if isinstance(obj, list):
        return [_clean(v, tmp) for v in obj]
    if isinstance(obj, str):
        return obj.replace(tmp, "{tmp}").replace(str(CARDS), "{cards}")
    if isinstance(obj, float) and not math.isfinite(obj):
        return repr(obj)
    return obj


def _digest_tree(obj, h, key="") -> None:
    """Feed every tensor, array and number of a nested structure into ``h``, keys sorted."""
    import numpy as np
    import torch
    if isinstance(obj, dict):
        for k in sorted(obj, key=str):
            if str(k) in _VOLATILE:
                continue
            _digest_tree(obj[k], h, f"{key}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _digest_tree(v, h, f"{key}[{i}]")
    elif isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, np.ndarray):
        h.update(f"{key}:{obj.dtype}:{obj.shape}".encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    else:
        h.update(f"{key}={obj!r}".encode())


def digest_checkpoint(path: Path) -> dict:
    """Digests of what a checkpoint holds: the chips, the digital parameters, the rule state, the
    random streams and the training state (every tensor, bit for bit)."""
    import torch
    ck = torch.load(path, map_location="cpu", weights_only=True)
    out = {}
    for part in ("crossbars", "digital", "gains", "rule_state", "rngs", "meta", "attached"):
        h = hashlib.sha256()
        _digest_tree(ck.get(part), h)
        out[part] = h.hexdigest()
    tr = ck.get("train") or {}
    h = hashlib.sha256()
    _digest_tree({k: v for k, v in tr.items() if k not in ("seconds", "config")}, h)
    out["train"] = h.hexdigest()
    res = ck.get("result")
    h = hashlib.sha256()
    _digest_tree(res, h)
    out["result"] = h.hexdigest()
    return out


def digest_h5(path: Path) -> dict:
    """Digests of every dataset of an HDF5 file, and of its attributes except versions and times."""
    import h5py
    import numpy as np
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                h = hashlib.sha256()
                arr = obj[()]
                if name.endswith("edges") and isinstance(arr, np.ndarray):    # a set: order is not data
                    arr = repr(sorted(repr(e) for e in arr.tolist()))
                h.update(f"{obj.dtype}:{obj.shape}".encode())
                h.update(np.ascontiguousarray(arr).tobytes() if isinstance(arr, np.ndarray) else repr(arr).encode())
                out[name] = h.hexdigest()
            attrs = {}
            for k, v in obj.attrs.items():
                if k in ("versions", "summary", "created"):
                    continue
                if isinstance(v, bytes):
                    v = v.decode()
                if isinstance(v, str) and v[:1] in "{[":
                    try:
                        v = json.loads(v)
                    except ValueError:
                        pass
                attrs[k] = _clean(v.tolist() if hasattr(v, "tolist") else v, str(path.parent))
            if attrs:
                out[f"{name}@attrs"] = hashlib.sha256(json.dumps(attrs, sort_keys=True, default=str)
                                                      .encode()).hexdigest()
        f.visititems(visit)
        visit("/", f)
    return out


def machine() -> dict:
    """What fixes the float results of a run besides the code: torch, its CPU kernels, the CPU."""
    import platform
    import torch
    flags = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line.split(":", 1)[1].strip()
                break
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "arch": platform.machine(), "cpu_flags_sha256": hashlib.sha256(flags.encode()).hexdigest()[:16]}


def run(name: str, argv: list, files: list, tmp: Path) -> dict:
    """One scenario: its exit code, cleaned JSON output and the digests of its files."""
    import torch
    from neurosal.cli import main
    argv = [a.replace("{tmp}", str(tmp)).replace("{cards}", str(CARDS)) for a in argv]
    simulating = argv[0] in ("train", "simulate", "cost", "compare-coding", "evaluate", "gradcam")
    if simulating:
        argv = argv + _RUN
    if argv[0] not in ("devices",) or argv[1] in ("list", "show", "curve"):
        argv = argv + ["--json"]
    threads = torch.get_num_threads()
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
            rc = main(argv)
    finally:
        torch.set_num_threads(threads)
    text = buf.getvalue()
    try:
        out = json.loads(text)
    except ValueError:
        out = text
    rec = {"rc": rc, "output": _clean(out, str(tmp))}
    for f in files:
        p = tmp / f
        rec[f] = digest_checkpoint(p) if f.endswith(".pt") else digest_h5(p)
    return rec


def run_all(tmp: Path, names=None) -> dict:
    return {name: run(name, argv, files[0] if files else [], tmp)
            for name, argv, *files in SCENARIOS if names is None or name in names}


if __name__ == "__main__":
    import tempfile
    import time
    import torch
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        res = {}
        for name, argv, *files in SCENARIOS:
            t0 = time.perf_counter()
            res[name] = run(name, argv, files[0] if files else [], Path(d))
            print(f"{name:<28} rc {res[name]['rc']}  {time.perf_counter() - t0:6.2f} s", file=sys.stderr)
    if "--write" in sys.argv:
        GOLDEN.write_text(json.dumps(res, indent=1, sort_keys=True) + "\n")
        MACHINE.write_text(json.dumps(machine(), indent=1, sort_keys=True) + "\n")
        print(f"wrote {GOLDEN} and {MACHINE}", file=sys.stderr)
    else:
        print(json.dumps(res, indent=1, sort_keys=True))
