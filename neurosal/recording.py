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

import contextlib
import errno
import json
import os
import sys
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
                 overwrite: bool = False, chunk_spikes: int = 1 << 16, owner=None):
        from .files import Owner, check_output, keep
        self.path = check_output(path, overwrite=overwrite)
        self.tmp = _partial(self.path)
        self.dt_ms = float(dt) * 1e3
        self.steps = int(steps)
        self.populations = {k: int(v) for k, v in populations.items()}
        self.samples = np.asarray(list(samples), dtype=np.int64)
        self.chunk_spikes = int(chunk_spikes)
        self.n_spikes = {}
        self._closed = False
        self.f = None
        # a second run on the same output stops here (``owner``: taken already by the caller)
        self.owner = owner if owner is not None else Owner(self.path).acquire()
        try:
            self._keep_stale()
            keep(f"rec:{self.path}", f"the unfinished recording {self.tmp} (complete = False; "
                                     "`neurosal inspect --allow-incomplete` reads it)")
            self._room(0)
            self.f = h5py.File(self.tmp, "w", locking=False)     # our own lock guards it
            self._header(metadata, labels)
        except (OSError, RuntimeError) as exc:
            from .files import OutputError
            if isinstance(exc, OutputError):
                raise
            self._fail(exc)
        except BaseException:
            self._abandon()
            raise

    def _keep_stale(self) -> None:
        """An unfinished earlier run's ``.partial`` is kept, under a numbered name, and said."""
        if not self.tmp.exists():
            return
        k = 1
        while self.tmp.with_name(f"{self.tmp.name}.{k}").exists():
            k += 1
        kept = self.tmp.with_name(f"{self.tmp.name}.{k}")
        os.replace(self.tmp, kept)
        print(f"neurosal: an earlier unfinished run left {self.tmp}; kept as {kept}", file=sys.stderr)

    def _header(self, metadata, labels) -> None:
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

    def _abandon(self) -> None:
        """Close what is open without raising; release the output."""
        self._closed = True
        if self.f is not None:
            try:
                self.f.close()
            except Exception:  # noqa: BLE001 - the file is already failing; the error that matters is raised
                pass
            self.f = None
        self.owner.release()

    def _fail(self, exc: Exception):
        """A write failed (full disk, I/O error): stop, keep the ``.partial`` as it is (marked
        incomplete), leave ``<out>`` untouched, and say so in one error."""
        from .files import OutputError
        self._abandon()
        code = getattr(exc, "errno", None)
        full = code in (errno.ENOSPC, errno.EDQUOT) or "no space left" in str(exc).lower()
        why = "the disk is full" if full else f"{exc}"
        old = f"; the earlier {self.path} is untouched" if self.path.exists() else ""
        raise OutputError(errno.ENOSPC if full else (code or errno.EIO),
                          f"writing the recording {self.tmp} failed: {why}. It is kept, marked incomplete "
                          f"(complete = False){old}") from None

    def _room(self, nbytes: int) -> None:
        """Stop cleanly *before* a write the disk cannot take. HDF5 (2.0) does not survive a
        full disk: a failed chunk write leaves the library in a state where the next flush
        crashes the process. So the free space is checked first, with room for the data
        twice over, whole chunks and the file's metadata; a disk filled by someone else in
        between still ends in the ``OSError`` path below."""
        try:
            st = os.statvfs(self.tmp.parent)
        except OSError:  # pragma: no cover - a file system without statvfs
            return
        need = 2 * int(nbytes) + 4 * 8 * self.chunk_spikes + (1 << 20)
        if st.f_bavail * st.f_frsize < need:
            self._fail(OSError(errno.ENOSPC, "No space left on device"))

    @contextlib.contextmanager
    def _writing(self, nbytes: int = 0):
        if self._closed:
            raise RuntimeError("recorder is closed")
        self._room(nbytes)
        try:
            yield
        except (OSError, RuntimeError) as exc:    # h5py reports a failed write as either
            self._fail(exc)

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
        with self._writing(16 * int(x.count_nonzero()) if var == "spikes" else 4 * x.numel()):
            self._write(pop, var, t0, x)

    def _write(self, pop: str, var: str, t0: int, x: torch.Tensor) -> None:
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
        with self._writing(16 * int(ev.t.numel())):
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
        from .files import fsync_dir, unkeep
        if self._closed:
            return
        if not ok:
            self._abandon()
            return
        try:
            meta = self.f["neurosal"]
            if summary:
                meta.attrs["summary"] = json.dumps(summary)
            meta.attrs["complete"] = True
            self.f.flush()
            self.f.close()
            self.f = None
            fd = os.open(self.tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self.tmp, self.path)
            fsync_dir(self.path.parent)
        except OSError as exc:
            self._fail(exc)
        self._closed = True
        self.owner.release()
        unkeep(f"rec:{self.path}")

    def declare_spikes(self, pops: Sequence[str]) -> None:
        """Create the spike groups of ``pops`` now, so a population that never fires still
        appears (with zero spikes) in the file."""
        with self._writing():
            for p in pops:
                self._spike_group(p)
            self.f.flush()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(ok=exc_type is None)
        return False


# ====================================================================== reading
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
                out["populations"][p] = {"spikes": n_sp, "neurons": n, "samples": s, "sorting": sorting,
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

