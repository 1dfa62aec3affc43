"""The writer of recordings: :class:`Recorder` streams spikes and traces of a run to a SONATA /
neurosal HDF5 file in chunks, crash-safe (see :mod:`neurosal.recording`).

May import: :mod:`neurosal.files`, :mod:`.layout`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import h5py
import numpy as np
import torch

from ..files import OutputError, Owner, check_output, fsync_dir, keep, unkeep
from .layout import FORMAT, MAGIC, SORTING, UNITS, VERSION, partial_path as _partial, versions

__all__ = ["Recorder"]


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
        self.path = check_output(path, overwrite=overwrite)
        self.tmp = _partial(self.path)
        self.dt_ms = float(dt) * 1e3
        self.steps = int(steps)
        self.populations = {k: int(v) for k, v in populations.items()}
        self.shapes: dict = {}
        self.samples = np.asarray(list(samples), dtype=np.int64)
        self.chunk_spikes = int(chunk_spikes)
        self.n_spikes = {}
        self._handles: dict = {}                  # (population, variable or None: spikes) -> datasets
        self._closed = False
        self.f = None
        # a second run on the same output stops here (``owner``: taken already by the caller)
        self.owner = owner if owner is not None else Owner(self.path).acquire()
        try:
            self._keep_stale()
            keep(f"rec:{self.path}", f"the unfinished recording {self.tmp} (complete = False; "
                                     "`neurosal inspect --allow-incomplete` reads it)")
            self._room(0)
            # our own lock guards the file; no chunk cache: an append-only writer gains nothing
            # from it (reports are written in whole chunks), and HDF5's per-dataset caches grew
            # the process by ~1.5 MB per 1,000 recorded steps (flat without, at the same speed)
            self.f = h5py.File(self.tmp, "w", locking=False, rdcc_nbytes=0)
            self._header(metadata, labels)
        except (OSError, RuntimeError) as exc:
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
                self._handles = {}
                self.f.close()
            except Exception:  # noqa: BLE001 - the file is already failing; the error that matters is raised
                pass
            self.f = None
        self.owner.release()

    def _fail(self, exc: Exception):
        """A write failed (full disk, I/O error): stop, keep the ``.partial`` as it is (marked
        incomplete), leave ``<out>`` untouched, and say so in one error."""
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
        if pop in self.shapes:
            g.attrs["shape"] = np.asarray(self.shapes[pop], dtype=np.int64)
        ts = g.create_dataset("timestamps", shape=(0,), maxshape=(None,), dtype="f8", chunks=(self.chunk_spikes,))
        ts.attrs["units"] = "ms"
        g.create_dataset("node_ids", shape=(0,), maxshape=(None,), dtype="u8", chunks=(self.chunk_spikes,))
        self.n_spikes[pop] = 0
        return g

    def add_population(self, name: str, n: int, shape: Optional[Sequence[int]] = None) -> None:
        """Declare population ``name`` of ``n`` neurons (if it is not declared yet); ``shape``:
        its layout (e.g. channels x height x width of a convolution's neurons), kept as the
        ``shape`` attribute of its spikes and reports (node ids count over the flattened shape)."""
        if name in self.populations:
            if int(self.populations[name]) != int(n):
                raise ValueError(f"population {name!r} has {self.populations[name]} neurons, not {n}")
        else:
            self.populations[name] = int(n)
        if shape is not None and len(shape) > 1 and name not in self.shapes:
            if math.prod(int(v) for v in shape) != int(n):
                raise ValueError(f"population {name!r}: shape {tuple(shape)} does not hold {n} neurons")
            self.shapes[name] = tuple(int(v) for v in shape)

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
        if pop in self.shapes:
            g.attrs["shape"] = np.asarray(self.shapes[pop], dtype=np.int64)
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
            d = self._handles.get((pop, var))
            if d is None:                                     # h5py lookups cost: keep the handle
                d = self._handles[(pop, var)] = self._report_group(pop, var, S * n, K)["data"]
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

    def write_spike_times(self, pop: str, t: torch.Tensor, window: int, shape: Optional[Sequence[int]] = None) -> None:
        """Append the spike times ``t`` ``[samples, n]`` of a charge-domain population, in units of
        one phase inside time window ``window`` (timestamps ``(window + t) * dt``); ``t >= 1``
        (or not finite) is no spike."""
        if self._closed:
            raise RuntimeError("recorder is closed")
        t = t.detach().cpu().to(torch.float64)
        if t.dim() != 2 or t.shape[0] != len(self.samples):
            raise ValueError(f"{pop}: expected spike times [{len(self.samples)}, n], got {tuple(t.shape)}")
        n = t.shape[1]
        self.add_population(pop, n, shape)
        fired = torch.isfinite(t) & (t < 1.0)
        idx = fired.nonzero()
        when = (window + t[fired]).numpy()
        order = np.argsort(when, kind="stable")
        with self._writing(16 * int(idx.shape[0])):
            node = (idx[:, 0] * n + idx[:, 1]).numpy()
            self._append_spikes(pop, when[order], node[order])
            self.f.flush()

    def _append_spikes(self, pop: str, steps: np.ndarray, node_ids: np.ndarray) -> None:
        """Append spikes (absolute step, node id), already in time order, to population ``pop``."""
        ds = self._handles.get((pop, None))
        if ds is None:                                        # h5py lookups cost: keep the handles
            g = self._spike_group(pop)
            ds = self._handles[(pop, None)] = (g["timestamps"], g["node_ids"])
        if not len(steps):
            return
        k = self.n_spikes[pop]
        for d, arr in zip(ds, (np.asarray(steps, dtype=np.float64) * self.dt_ms,
                               np.asarray(node_ids).astype(np.uint64))):
            d.resize((k + len(arr),))
            d[k:] = arr
        self.n_spikes[pop] = k + len(steps)

    # -------------------------------------------------------------- finishing
    def close(self, ok: bool = True, summary: Optional[dict] = None) -> None:
        """Finish the file: mark it complete and move it to its name (``ok``), or leave the
        ``.partial`` file marked incomplete."""
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
            self._handles = {}
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
