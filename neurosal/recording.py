r"""Recordings: one HDF5 file per run, in the SONATA layout, streamed to disk in chunks.

Layout (SONATA spike and frame-report files, plus neurosal's run metadata)::

    /                          attrs: magic = 0x0A7A (uint32), version = [0, 1] (uint32)
    /spikes/<layer>/timestamps float64 [n_spikes], attr units = "ms"
    /spikes/<layer>/node_ids   uint64  [n_spikes]
    /spikes/<layer>            attr sorting: HDF5 enum {none: 0, by_id: 1, by_time: 2} = by_time
    /report/<layer>.<var>/data                 float32 [n_times, n_values], chunked, attr units
    /report/<layer>.<var>/mapping/node_ids     uint64 [N]
    /report/<layer>.<var>/mapping/index_pointers  uint64 [N + 1]
    /report/<layer>.<var>/mapping/element_ids  uint32 [n_values]
    /report/<layer>.<var>/mapping/time         float64 [start, stop, dt], attr units = "ms"
    /neurosal                  attrs: complete, format, config, network, devices, seed, coding,
                               dt_ms, steps, versions (JSON strings where structured)
    /neurosal/samples          int64  dataset indices of the recorded samples
    /neurosal/labels           int64  their labels (when known)

**Batch axis.** A population holds one layer for all recorded samples; the node id of
neuron ``i`` of the ``s``-th recorded sample is ``s * n_neurons + i`` (attributes
``n_neurons`` and ``samples`` on each population group say how to unfold it).
:meth:`Recording.spike_trains` and :meth:`Recording.trace` do the unfolding.

**Crash safety.** The recorder writes to ``<out>.partial`` and flushes after every chunk;
``/neurosal`` says ``complete = False`` until the run ends, and only then is the file
renamed to ``<out>``. A run that dies leaves no file at ``<out>`` (an older file there is
untouched) and a ``.partial`` file that says it is incomplete. An existing ``<out>`` is
replaced only with ``overwrite=True``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Optional, Sequence

import h5py
import numpy as np
import torch

__all__ = ["MAGIC", "VERSION", "SORTING", "Recorder", "Recording", "RecordingError", "open", "versions"]

MAGIC = 0x0A7A
VERSION = (0, 1)
SORTING = h5py.enum_dtype({"none": 0, "by_id": 1, "by_time": 2}, basetype="u1")
UNITS = {"v": "threshold", "current": "weight", "spikes": ""}
FORMAT = "neurosal-recording-1"


class RecordingError(ValueError):
    """A file is missing, is not a neurosal/SONATA recording, or was not finished."""


def versions() -> dict:
    """Versions of everything that shapes a run's numbers."""
    import norse
    import scipy
    from importlib.metadata import PackageNotFoundError, version
    try:
        ns = version("neurosal")
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        ns = "unknown"
    return {"neurosal": ns, "torch": torch.__version__, "norse": getattr(norse, "__version__", "unknown"),
            "numpy": np.__version__, "scipy": scipy.__version__, "h5py": h5py.__version__}


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


class Recorder:
    """Streams spikes and traces of a run to a SONATA/neurosal HDF5 file.

    ``populations`` maps each recorded layer name to its number of neurons;
    ``samples`` are the dataset indices of the recorded batch columns (node ids count in
    this order). Use as a context manager: a clean exit finalizes the file, an exception
    leaves the ``.partial`` file marked incomplete.
    """

    def __init__(self, path: str | Path, *, dt: float, steps: int, populations: dict, samples: Sequence[int],
                 metadata: Optional[dict] = None, labels: Optional[Sequence[int]] = None,
                 overwrite: bool = False, chunk_spikes: int = 1 << 16):
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} exists; pass --overwrite (overwrite=True) to replace it")
        if self.path.is_dir():
            raise IsADirectoryError(f"{self.path} is a directory, not a file name")
        self.tmp = _partial(self.path)
        self.dt_ms = float(dt) * 1e3
        self.steps = int(steps)
        self.populations = {k: int(v) for k, v in populations.items()}
        self.samples = np.asarray(list(samples), dtype=np.int64)
        self.chunk_spikes = int(chunk_spikes)
        self.n_spikes = {}
        self._closed = False
        self.f = h5py.File(self.tmp, "w")
        f = self.f
        f.attrs["magic"] = np.uint32(MAGIC)
        f.attrs["version"] = np.asarray(VERSION, dtype=np.uint32)
        meta = f.create_group("neurosal")
        meta.attrs["complete"] = False
        meta.attrs["format"] = FORMAT
        meta.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        meta.attrs["dt_ms"] = self.dt_ms
        meta.attrs["steps"] = self.steps
        meta.attrs["versions"] = json.dumps(versions())
        for k, v in (metadata or {}).items():
            meta.attrs[k] = v if isinstance(v, (str, int, float, bool, np.number)) else json.dumps(v)
        meta.create_dataset("samples", data=self.samples)
        if labels is not None:
            meta.create_dataset("labels", data=np.asarray(list(labels), dtype=np.int64))
        f.flush()

    # -------------------------------------------------------------- writing
    def _spike_group(self, pop: str):
        if pop in self.n_spikes:
            return self.f["spikes"][pop]
        g = self.f.require_group("spikes").create_group(pop)
        g.attrs.create("sorting", 2, dtype=SORTING)             # appended in time order
        g.attrs["n_neurons"] = self._n(pop)
        g.attrs["samples"] = self.samples
        ts = g.create_dataset("timestamps", shape=(0,), maxshape=(None,), dtype="f8", chunks=(self.chunk_spikes,))
        ts.attrs["units"] = "ms"
        g.create_dataset("node_ids", shape=(0,), maxshape=(None,), dtype="u8", chunks=(self.chunk_spikes,))
        self.n_spikes[pop] = 0
        return g

    def _n(self, pop: str) -> int:
        if pop not in self.populations:
            raise KeyError(f"population {pop!r} was not declared; declared: {', '.join(self.populations)}")
        return self.populations[pop]

    def _report_group(self, pop: str, var: str, n_values: int, chunk_t: int):
        name = f"{pop}.{var}"
        rep = self.f.require_group("report")
        if name in rep:
            return rep[name]
        g = rep.create_group(name)
        g.attrs["neurosal_layer"] = pop
        g.attrs["neurosal_variable"] = var
        g.attrs["n_neurons"] = self._n(pop)
        g.attrs["samples"] = self.samples
        d = g.create_dataset("data", shape=(0, n_values), maxshape=(None, n_values), dtype="f4",
                             chunks=(max(1, min(chunk_t, 1024)), n_values))
        d.attrs["units"] = UNITS.get(var, "")
        m = g.create_group("mapping")
        m.create_dataset("node_ids", data=np.arange(n_values, dtype=np.uint64))
        m.create_dataset("index_pointers", data=np.arange(n_values + 1, dtype=np.uint64))
        m.create_dataset("element_ids", data=np.zeros(n_values, dtype=np.uint32))
        t = m.create_dataset("time", data=np.array([0.0, self.steps * self.dt_ms, self.dt_ms]))
        t.attrs["units"] = "ms"
        return g

    def write(self, pop: str, var: str, t0: int, x: torch.Tensor) -> None:
        """Append ``x`` ``[K, samples, n]`` of variable ``var`` at steps ``t0 .. t0+K-1``."""
        if self._closed:
            raise RuntimeError("recorder is closed")
        x = x.detach().cpu()
        if x.dim() != 3 or x.shape[1] != len(self.samples) or x.shape[2] != self._n(pop):
            raise ValueError(f"{pop}/{var}: expected [K, {len(self.samples)}, {self._n(pop)}], got {tuple(x.shape)}")
        K, S, n = x.shape
        if var == "spikes":
            idx = x.nonzero().numpy()                         # sorted by step, then node id
            self._append_spikes(pop, t0 + idx[:, 0], idx[:, 1] * n + idx[:, 2])
        else:
            g = self._report_group(pop, var, S * n, K)
            d = g["data"]
            if d.shape[0] != t0:
                raise ValueError(f"{pop}/{var}: chunk starts at step {t0} but {d.shape[0]} steps are written")
            d.resize((t0 + K, S * n))
            d[t0:] = x.reshape(K, S * n).to(torch.float32).numpy()
        self.f.flush()

    def write_events(self, pop: str, t0: int, ev) -> None:
        """Append address events (:class:`~neurosal.coding.SpikeEvents`, sorted by step,
        sample, neuron) of steps ``t0 ..`` to spike population ``pop``."""
        if self._closed:
            raise RuntimeError("recorder is closed")
        n = self._n(pop)
        if ev.n != n or ev.batch != len(self.samples):
            raise ValueError(f"{pop}: expected events over {len(self.samples)} samples x {n} neurons, "
                             f"got {ev.batch} x {ev.n}")
        self._append_spikes(pop, t0 + ev.t.cpu().numpy(), ev.b.cpu().numpy() * n + ev.i.cpu().numpy())
        self.f.flush()

    def _append_spikes(self, pop: str, steps: np.ndarray, node_ids: np.ndarray) -> None:
        """Append spikes (absolute step, node id), already in time order, to population ``pop``."""
        g = self._spike_group(pop)
        if not len(steps):
            return
        k = self.n_spikes[pop]
        for name, arr in (("timestamps", np.asarray(steps, dtype=np.float64) * self.dt_ms),
                          ("node_ids", np.asarray(node_ids).astype(np.uint64))):
            d = g[name]
            d.resize((k + len(arr),))
            d[k:] = arr
        self.n_spikes[pop] = k + len(steps)

    # -------------------------------------------------------------- finishing
    def close(self, ok: bool = True, summary: Optional[dict] = None) -> None:
        """Finish the file: mark it complete and move it to its name (``ok``), or leave the
        ``.partial`` file marked incomplete."""
        if self._closed:
            return
        self._closed = True
        try:
            if ok:
                meta = self.f["neurosal"]
                if summary:
                    meta.attrs["summary"] = json.dumps(summary)
                meta.attrs["complete"] = True
                self.f.flush()
        finally:
            self.f.close()
        if ok:
            os.replace(self.tmp, self.path)

    def declare_spikes(self, pops: Sequence[str]) -> None:
        """Create the spike groups of ``pops`` now, so a population that never fires still
        appears (with zero spikes) in the file."""
        for p in pops:
            self._spike_group(p)
        self.f.flush()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(ok=exc_type is None)
        return False


# ====================================================================== reading
class Recording:
    """A recording opened for reading (see :func:`open`). Data are read on demand."""

    def __init__(self, path: Path, allow_incomplete: bool):
        self.path = path
        with _h5(path) as f:
            magic = f.attrs.get("magic")
            if magic is None or int(np.asarray(magic).ravel()[0]) != MAGIC:
                raise RecordingError(f"{path}: not a SONATA file (root attribute 'magic' is "
                                     f"{'missing' if magic is None else hex(int(np.asarray(magic).ravel()[0]))}, "
                                     f"expected 0x0A7A)")
            self.version = tuple(int(v) for v in np.asarray(f.attrs.get("version", [0, 0])).ravel())
            meta = f.get("neurosal")
            self.metadata = {}
            self.complete = True
            if meta is not None:
                for k, v in meta.attrs.items():
                    if isinstance(v, bytes):
                        v = v.decode()
                    if isinstance(v, str) and v[:1] in "{[":
                        try:
                            v = json.loads(v)
                        except json.JSONDecodeError:
                            pass
                    self.metadata[k] = v.item() if isinstance(v, np.generic) else v
                self.complete = bool(self.metadata.get("complete", False))
                self.samples = meta["samples"][()] if "samples" in meta else None
                self.labels = meta["labels"][()] if "labels" in meta else None
            else:
                self.samples = self.labels = None
            self.populations = sorted(f["spikes"].keys()) if "spikes" in f else []
            self.reports = sorted(f["report"].keys()) if "report" in f else []
            self._pop_attrs = {p: dict(f["spikes"][p].attrs) for p in self.populations}
            self._rep_attrs = {r: dict(f["report"][r].attrs) for r in self.reports}
        if not self.complete and not allow_incomplete:
            raise RecordingError(f"{path}: the run that wrote this file did not finish (complete = False); "
                                 "open(path, allow_incomplete=True) reads what was written")

    @property
    def is_neurosal(self) -> bool:
        return self.metadata.get("format") == FORMAT

    def n_neurons(self, pop: str) -> int:
        a = self._pop_attrs.get(pop) or next((v for v in self._rep_attrs.values()
                                              if v.get("neurosal_layer") == pop), None)
        if a is None or "n_neurons" not in a:
            raise KeyError(f"no population {pop!r}; populations: {', '.join(self.populations)}")
        return int(a["n_neurons"])

    def spikes(self, pop: str) -> tuple[np.ndarray, np.ndarray]:
        """All spikes of population ``pop``: ``(timestamps_ms, node_ids)``."""
        if pop not in self.populations:
            raise KeyError(f"no spike population {pop!r}; populations: {', '.join(self.populations) or 'none'}")
        with _h5(self.path) as f:
            g = f["spikes"][pop]
            return g["timestamps"][()], g["node_ids"][()]

    def spike_trains(self, pop: str, sample: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Spikes of the ``sample``-th recorded sample: ``(timestamps_ms, neuron_index)``."""
        t, ids = self.spikes(pop)
        n = self.n_neurons(pop)
        sel = (ids // n) == sample
        return t[sel], (ids[sel] % n).astype(np.int64)

    def report(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Frame report ``name`` (``'<layer>.<var>'``): ``(times_ms [T], data [T, n_values])``."""
        if name not in self.reports:
            raise KeyError(f"no report {name!r}; reports: {', '.join(self.reports) or 'none'}")
        with _h5(self.path) as f:
            g = f["report"][name]
            data = g["data"][()]
            start, _stop, dt = g["mapping"]["time"][()]
        return start + dt * np.arange(data.shape[0]), data

    def trace(self, pop: str, var: str = "v", sample: int = 0) -> np.ndarray:
        """``[T, n_neurons]`` trace of ``var`` for the ``sample``-th recorded sample."""
        _, data = self.report(f"{pop}.{var}")
        n = self.n_neurons(pop)
        return data[:, sample * n:(sample + 1) * n]

    def summary(self) -> dict:
        """What is in the file (the content of ``neurosal inspect``)."""
        out = {"path": str(self.path), "complete": self.complete, "sonata_version": list(self.version),
               "populations": {}, "reports": {}}
        with _h5(self.path) as f:
            for p in self.populations:
                g = f["spikes"][p]
                n_sp = int(g["node_ids"].shape[0])
                n = int(g.attrs.get("n_neurons", 0)) or None
                s = len(g.attrs.get("samples", [])) or None
                sorting = g.attrs.get("sorting")
                names = {v: k for k, v in h5py.check_enum_dtype(g.attrs.get_id("sorting").dtype).items()} \
                    if "sorting" in g.attrs else {}
                out["populations"][p] = {"spikes": n_sp, "neurons": n, "samples": s,
                                         "sorting": names.get(int(sorting), None) if sorting is not None else None,
                                         "spikes_per_sample": (n_sp / s) if s else None}
            for r in self.reports:
                d = f["report"][r]["data"]
                out["reports"][r] = {"shape": list(d.shape), "units": d.attrs.get("units", ""),
                                     "chunks": list(d.chunks) if d.chunks else None}
        keep = ("coding", "seed", "dt_ms", "steps", "created", "dataset", "versions", "network", "devices",
                "config", "summary", "format")
        out["metadata"] = {k: self.metadata[k] for k in keep if k in self.metadata}
        return out


class _h5:
    """Open an HDF5 file for reading, turning h5py's errors into :class:`RecordingError`."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        try:
            self.f = h5py.File(self.path, "r")
        except FileNotFoundError:
            raise RecordingError(f"{self.path}: no such file") from None
        except OSError as exc:
            raise RecordingError(f"{self.path}: not a readable HDF5 file ({exc})") from None
        return self.f

    def __exit__(self, *a):
        self.f.close()
        return False


def open(path: str | Path, *, allow_incomplete: bool = False) -> Recording:  # noqa: A001 - the API name
    """Open a recording. Raises :class:`RecordingError` for a missing file, a file that is
    not HDF5 or not SONATA, or (unless ``allow_incomplete``) a run that did not finish."""
    p = Path(path)
    if not p.exists():
        partial = _partial(p)
        hint = f" (an unfinished run left {partial})" if partial.exists() else ""
        raise RecordingError(f"{p}: no such file{hint}")
    if p.is_dir():
        raise RecordingError(f"{p}: is a directory, not a recording")
    return Recording(p, allow_incomplete)

