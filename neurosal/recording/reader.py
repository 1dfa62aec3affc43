"""The reader of recordings: :func:`open` checks a file's structure when it opens it (a missing
dataset, a group where a dataset belongs, a string where a number or flag belongs is a named
error; external and soft links are not followed) and :class:`Recording` reads only what is
asked for, refusing any one read larger than ``max_bytes``.

May import: :mod:`.layout`.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from .layout import FORMAT, MAGIC, RecordingError, partial_path as _partial

__all__ = ["Recording", "open", "MAX_BYTES"]

MAX_BYTES = 2 << 30          # default bound on what one read may load (2 GiB)
_SCAN = 1 << 20              # spikes are scanned in blocks of this many


def _link(parent, name: str, where: str):
    """``parent[name]``, refusing links that leave the file (external) or may (soft)."""
    lk = parent.get(name, getlink=True)
    if lk is None:
        return None
    if isinstance(lk, h5py.ExternalLink):
        raise RecordingError(f"{where}: an external link to {lk.filename}:{lk.path}; a recording is one file "
                             "and external links are not followed")
    if isinstance(lk, h5py.SoftLink):
        raise RecordingError(f"{where}: a soft link to {lk.path}; links are not followed in a recording")
    return parent[name]


def _member(parent, name: str, where: str, cls, required: bool):
    """``parent[name]`` if it is a ``cls`` (h5py Dataset or Group); ``None`` when it is absent
    and not ``required``; a named error otherwise."""
    obj = _link(parent, name, where)
    if obj is None:
        if required:
            raise RecordingError(f"{where}: missing (a SONATA recording has it)")
        return None
    if not isinstance(obj, cls):
        want, got = ("dataset", "group") if cls is h5py.Dataset else ("group", "dataset")
        raise RecordingError(f"{where}: a {got} where a {want} belongs")
    return obj


def _dataset(parent, name: str, where: str, *, ndim: int, kind: str = "number", required: bool = True):
    d = _member(parent, name, where, h5py.Dataset, required)
    if d is None:
        return None
    if d.ndim != ndim:
        raise RecordingError(f"{where}: {d.ndim}-d, expected {ndim}-d")
    k = d.dtype.kind
    ok = k in "iu" if kind == "integer" else k in "iuf"
    if not ok:
        raise RecordingError(f"{where}: holds {d.dtype}, expected {'integers' if kind == 'integer' else 'numbers'}")
    return d


def _group(parent, name: str, where: str, *, required: bool = False):
    return _member(parent, name, where, h5py.Group, required)


def _number(v, where: str, *, integer: bool = False):
    a = np.asarray(v)
    if a.dtype.kind not in ("iu" if integer else "iuf") or a.size != 1:
        raise RecordingError(f"{where}: {v!r} is not {'an integer' if integer else 'a number'}")
    return int(a.ravel()[0]) if integer else float(a.ravel()[0])


def _flag(v, where: str) -> bool:
    a = np.asarray(v)
    if a.dtype.kind not in "biu" or a.size != 1 or int(a.ravel()[0]) not in (0, 1):
        raise RecordingError(f"{where}: {v!r} is not a boolean (stored as {a.dtype})")
    return bool(a.ravel()[0])


class Recording:
    """A recording opened for reading (see :func:`open`). Its structure is checked when it is
    opened (a named :class:`RecordingError` for anything malformed; links out of the file are
    not followed); data are read on demand, and a read that would load more than
    ``max_bytes`` is refused (a crafted file cannot make a reader allocate terabytes)."""

    def __init__(self, path: Path, allow_incomplete: bool, max_bytes: int = MAX_BYTES):
        self.path = path
        self.max_bytes = int(max_bytes)
        with _h5(path) as f:
            magic = f.attrs.get("magic")
            if magic is None:
                raise RecordingError(f"{path}: not a SONATA file (root attribute 'magic' is missing, expected 0x0A7A)")
            m = _number(magic, f"{path}: root attribute 'magic'", integer=True)
            if m != MAGIC:
                raise RecordingError(f"{path}: not a SONATA file (root attribute 'magic' is {hex(m)}, expected 0x0A7A)")
            ver = np.asarray(f.attrs.get("version", [0, 0]))
            if ver.dtype.kind not in "iu":
                raise RecordingError(f"{path}: root attribute 'version' is {ver!r}, expected integers")
            self.version = tuple(int(v) for v in ver.ravel())
            meta = _group(f, "neurosal", f"{path}: /neurosal")
            self.metadata = {}
            self.complete = True
            self.samples = self.labels = None
            if meta is not None:
                for k, v in meta.attrs.items():
                    if isinstance(v, bytes):
                        v = v.decode(errors="replace")
                    if isinstance(v, str) and v[:1] in "{[":
                        try:
                            v = json.loads(v)
                        except json.JSONDecodeError:
                            pass
                    self.metadata[k] = v.item() if isinstance(v, np.generic) else v
                if "complete" not in meta.attrs:
                    raise RecordingError(f"{path}: /neurosal has no attribute 'complete'")
                self.complete = _flag(meta.attrs["complete"], f"{path}: /neurosal attribute 'complete'")
                self.metadata["complete"] = self.complete
                for k, integer in (("dt_ms", False), ("steps", True)):
                    if k in meta.attrs:
                        self.metadata[k] = _number(meta.attrs[k], f"{path}: /neurosal attribute {k!r}",
                                                   integer=integer)
                for k in ("samples", "labels"):
                    d = _dataset(meta, k, f"{path}: /neurosal/{k}", ndim=1, kind="integer", required=False)
                    if d is not None:
                        self._bound(d.shape, d.dtype, f"/neurosal/{k}")
                        setattr(self, k, d[()])
            sp = _group(f, "spikes", f"{path}: /spikes")
            rp = _group(f, "report", f"{path}: /report")
            self.populations = sorted(sp.keys()) if sp is not None else []
            self.reports = sorted(rp.keys()) if rp is not None else []
            self._pop_attrs, self._rep_attrs = {}, {}
            for p in self.populations:
                w = f"{path}: /spikes/{p}"
                g = _group(sp, p, w)
                ts = _dataset(g, "timestamps", f"{w}/timestamps", ndim=1)
                ids = _dataset(g, "node_ids", f"{w}/node_ids", ndim=1, kind="integer")
                if ts.shape != ids.shape:
                    raise RecordingError(f"{w}: {ts.shape[0]} timestamps but {ids.shape[0]} node ids")
                self._pop_attrs[p] = self._attrs(g, w)
            for r in self.reports:
                w = f"{path}: /report/{r}"
                g = _group(rp, r, w)
                _dataset(g, "data", f"{w}/data", ndim=2)
                mp = _group(g, "mapping", f"{w}/mapping", required=True)
                t = _dataset(mp, "time", f"{w}/mapping/time", ndim=1)
                if t.shape != (3,):
                    raise RecordingError(f"{w}/mapping/time: {t.shape[0]} values, expected [start, stop, dt]")
                self._rep_attrs[r] = self._attrs(g, w)
        if not self.complete and not allow_incomplete:
            raise RecordingError(f"{path}: the run that wrote this file did not finish (complete = False); "
                                 "open(path, allow_incomplete=True) reads what was written")

    @staticmethod
    def _attrs(g, where: str) -> dict:
        a = dict(g.attrs)
        if "n_neurons" in a:
            a["n_neurons"] = _number(a["n_neurons"], f"{where} attribute 'n_neurons'", integer=True)
            if a["n_neurons"] < 1:
                raise RecordingError(f"{where} attribute 'n_neurons': {a['n_neurons']}, expected >= 1")
        return a

    def _bound(self, shape, dtype, what: str) -> None:
        n = int(np.prod(shape, dtype=np.float64)) * np.dtype(dtype).itemsize
        if n > self.max_bytes:
            raise RecordingError(f"{self.path}: reading {what} would load {n / 2**30:.3g} GiB, more than the "
                                 f"limit of {self.max_bytes / 2**30:.3g} GiB (open(..., max_bytes=...) raises it)")

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
            self._bound((g["timestamps"].shape[0], 2), np.float64, f"/spikes/{pop}")
            return g["timestamps"][()], g["node_ids"][()]

    def spike_trains(self, pop: str, sample: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Spikes of the ``sample``-th recorded sample: ``(timestamps_ms, neuron_index)``. The
        file is scanned in blocks: memory follows this sample's spikes, not the file's."""
        if pop not in self.populations:
            raise KeyError(f"no spike population {pop!r}; populations: {', '.join(self.populations) or 'none'}")
        n = self.n_neurons(pop)
        ts_out, id_out, size = [], [], 0
        with _h5(self.path) as f:
            g = f["spikes"][pop]
            ts_d, id_d = g["timestamps"], g["node_ids"]
            for a in range(0, ts_d.shape[0], _SCAN):
                ids = id_d[a:a + _SCAN]
                sel = (ids // n) == sample
                if sel.any():
                    ts_out.append(ts_d[a:a + _SCAN][sel])
                    id_out.append((ids[sel] % n).astype(np.int64))
                    size += int(sel.sum()) * 16
                    if size > self.max_bytes:
                        self._bound((size,), np.uint8, f"the spikes of sample {sample} of /spikes/{pop}")
        if not ts_out:
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        return np.concatenate(ts_out), np.concatenate(id_out)

    def report(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Frame report ``name`` (``'<layer>.<var>'``): ``(times_ms [T], data [T, n_values])``."""
        if name not in self.reports:
            raise KeyError(f"no report {name!r}; reports: {', '.join(self.reports) or 'none'}")
        with _h5(self.path) as f:
            g = f["report"][name]
            self._bound(g["data"].shape, g["data"].dtype, f"/report/{name}/data")
            data = g["data"][()]
            start, _stop, dt = g["mapping"]["time"][()]
        return start + dt * np.arange(data.shape[0]), data

    def trace(self, pop: str, var: str = "v", sample: int = 0) -> np.ndarray:
        """``[T, n_neurons]`` trace of ``var`` for the ``sample``-th recorded sample (only those
        columns are read)."""
        name = f"{pop}.{var}"
        if name not in self.reports:
            raise KeyError(f"no report {name!r}; reports: {', '.join(self.reports) or 'none'}")
        n = self.n_neurons(pop)
        with _h5(self.path) as f:
            d = f["report"][name]["data"]
            if not 0 <= sample * n < d.shape[1]:
                raise KeyError(f"sample {sample} is not in report {name!r} ({d.shape[1] // n} samples)")
            self._bound((d.shape[0], n), d.dtype, f"sample {sample} of /report/{name}/data")
            return d[:, sample * n:(sample + 1) * n]

    def times(self, name: str) -> np.ndarray:
        """Frame times (ms) of report ``name``."""
        with _h5(self.path) as f:
            g = f["report"][name]
            start, _stop, dt = g["mapping"]["time"][()]
            return start + dt * np.arange(g["data"].shape[0])

    def summary(self) -> dict:
        """What is in the file (the content of ``neurosal inspect``)."""
        out = {"path": str(self.path), "complete": self.complete, "sonata_version": list(self.version),
               "populations": {}, "reports": {}}
        with _h5(self.path) as f:
            for p in self.populations:
                g = f["spikes"][p]
                n_sp = int(g["node_ids"].shape[0])
                n = self._pop_attrs[p].get("n_neurons") or None
                smp = g.attrs.get("samples", [])
                s = (len(smp) if np.ndim(smp) == 1 else None) or None
                sorting = None
                if "sorting" in g.attrs:
                    enum = h5py.check_enum_dtype(g.attrs.get_id("sorting").dtype)
                    raw = np.asarray(g.attrs["sorting"])
                    if enum is not None and raw.dtype.kind in "iu" and raw.size == 1:
                        sorting = {v: k for k, v in enum.items()}.get(int(raw.ravel()[0]))
                shape = [int(v) for v in np.ravel(g.attrs["shape"])] if "shape" in g.attrs else None
                out["populations"][p] = {"spikes": n_sp, "neurons": n, "samples": s, "sorting": sorting,
                                         "spikes_per_sample": (n_sp / s) if s else None, "shape": shape}
            for r in self.reports:
                d = f["report"][r]["data"]
                out["reports"][r] = {"shape": list(d.shape), "units": d.attrs.get("units", ""),
                                     "chunks": list(d.chunks) if d.chunks else None}
        keep = ("coding", "seed", "dt_ms", "steps", "created", "dataset", "versions", "network", "devices",
                "config", "summary", "format", "engine")
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


def open(path: str | Path, *, allow_incomplete: bool = False,  # noqa: A001 - the API name
         max_bytes: int = MAX_BYTES) -> Recording:
    """Open a recording. Raises :class:`RecordingError` for a missing file, a file that is
    not HDF5 or not SONATA, malformed structure, or (unless ``allow_incomplete``) a run that
    did not finish. ``max_bytes`` bounds what any one read may load."""
    p = Path(path)
    if not p.exists():
        partial = _partial(p)
        hint = f" (an unfinished run left {partial})" if partial.exists() else ""
        raise RecordingError(f"{p}: no such file{hint}")
    if p.is_dir():
        raise RecordingError(f"{p}: is a directory, not a recording")
    return Recording(p, allow_incomplete, max_bytes)
