"""HDF5 recordings: the SONATA layout (checked against the spec's rules), round trips through
the reader, streaming in chunks, crash safety, overwrite protection and clear errors."""

import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
import torch

from neurosal import recording
from neurosal.networks import build
from neurosal.recording import Recorder, RecordingError
from neurosal.engine import Probe, Simulator, encoder_for


def _run(path, *, steps=40, chunk=16, fail_at=None, overwrite=False, samples=3):
    net = build("mlp-64-100-10", device="moderate", coding="spike", seed=0)
    x = torch.rand(5, 64, generator=torch.Generator().manual_seed(0))
    enc = encoder_for("rate", x, steps, seed=1)
    if fail_at is not None:
        inner = enc

        def enc(t0, t1):
            if t0 >= fail_at:
                raise RuntimeError("simulated crash")
            return inner(t0, t1)
    probes = [Probe("input", ("spikes",), range(samples))] + [
        Probe(n, ("spikes", "v"), range(samples)) for n in net.layer_names()]
    pops = {"input": 64, "fc1": 100, "fc2": 10}
    with Recorder(path, dt=1e-3, steps=steps, populations=pops, samples=range(samples), labels=[3, 1, 4][:samples],
                  metadata={"coding": "spike", "seed": 0, "network": {"name": "mlp-64-100-10"}},
                  overwrite=overwrite) as rec:
        rec.declare_spikes(list(pops))
        with torch.no_grad():
            Simulator(net, chunk=chunk).run(enc, steps=steps, probes=probes, recorder=rec)
    # the same run held in memory, for the round trip
    net2 = build("mlp-64-100-10", device="moderate", coding="spike", seed=0)
    with torch.no_grad():
        mem = Simulator(net2, chunk=chunk).run(encoder_for("rate", x, steps, seed=1), steps=steps, probes=probes)
    return mem


def test_layout_follows_sonata(tmp_path):
    """Rules from the SONATA spec (spike file and frame report), checked on the raw HDF5."""
    p = tmp_path / "run.h5"
    _run(p)
    with h5py.File(p, "r") as f:
        assert int(f.attrs["magic"]) == 0x0A7A
        assert list(f.attrs["version"]) == [0, 1]
        for pop in ("input", "fc1", "fc2"):
            g = f["spikes"][pop]
            ts, ids = g["timestamps"], g["node_ids"]
            assert ts.dtype == np.float64 and ts.attrs["units"] == "ms"
            assert ids.dtype == np.uint64 and ids.shape == ts.shape
            enum = h5py.check_enum_dtype(g.attrs.get_id("sorting").dtype)
            assert enum == {"none": 0, "by_id": 1, "by_time": 2}
            assert int(g.attrs["sorting"]) == 2
            assert np.all(np.diff(ts[()]) >= 0)                 # by_time holds
            assert ts.chunks is not None                        # chunked, appendable
        for name in ("fc1.v", "fc2.v"):
            g = f["report"][name]
            d, m = g["data"], g["mapping"]
            n_nodes = m["node_ids"].shape[0]
            ip = m["index_pointers"][()]
            assert d.ndim == 2 and d.shape[0] == 40
            assert ip.shape == (n_nodes + 1,) and ip[0] == 0 and ip[-1] == d.shape[1] and np.all(np.diff(ip) >= 0)
            assert m["element_ids"].shape == (d.shape[1],)
            t = m["time"][()]
            assert t.shape == (3,) and t[0] == 0 and t[2] == 1.0 and t[1] == 40.0 and m["time"].attrs["units"] == "ms"
            assert d.chunks is not None and d.chunks[0] <= 16
        meta = f["neurosal"]
        assert bool(meta.attrs["complete"]) and meta.attrs["format"] == "neurosal-recording-1"
        assert "torch" in meta.attrs["versions"]


def test_round_trip_through_reader(tmp_path):
    p = tmp_path / "run.h5"
    mem = _run(p)
    rec = recording.open(p)
    assert rec.complete and rec.is_neurosal and rec.populations == ["fc1", "fc2", "input"]
    assert rec.labels.tolist() == [3, 1, 4] and rec.metadata["network"]["name"] == "mlp-64-100-10"
    for layer, n in (("input", 64), ("fc1", 100), ("fc2", 10)):
        z = mem.probes[f"{layer}/spikes"]                      # [T, samples, n]
        for s in range(3):
            t, i = rec.spike_trains(layer, s)
            dense = np.zeros((40, n))
            dense[(t / 1.0).astype(int), i] = 1
            assert np.array_equal(dense, z[:, s].numpy())
    for layer in ("fc1", "fc2"):
        v = mem.probes[f"{layer}/v"]
        for s in range(3):
            assert np.allclose(rec.trace(layer, "v", s), v[:, s].numpy(), atol=1e-6)
    times, data = rec.report("fc1.v")
    assert np.allclose(times, np.arange(40.0)) and data.shape == (40, 300)


def test_crash_leaves_no_complete_looking_file(tmp_path):
    p = tmp_path / "run.h5"
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(p, fail_at=16)
    assert not p.exists()
    partial = tmp_path / "run.h5.partial"
    assert partial.exists()
    with pytest.raises(RecordingError, match="did not finish"):
        recording.open(partial)
    with pytest.raises(RecordingError, match=r"no such file \(an unfinished run left .*partial\)"):
        recording.open(p)
    rec = recording.open(partial, allow_incomplete=True)
    assert not rec.complete
    _, data = rec.report("fc1.v")
    assert data.shape[0] == 16                                 # the chunk written before the crash


def test_crash_while_overwriting_keeps_the_old_file(tmp_path):
    p = tmp_path / "run.h5"
    _run(p)
    before = p.read_bytes()
    with pytest.raises(RuntimeError):
        _run(p, fail_at=16, overwrite=True)
    assert p.read_bytes() == before and recording.open(p).complete


def test_hard_kill_mid_run(tmp_path):
    """A process killed mid-run (no cleanup at all) leaves no file at the output path."""
    p = tmp_path / "run.h5"
    code = textwrap.dedent(f"""
        import os, torch
        from neurosal.recording import Recorder
        rec = Recorder({str(p)!r}, dt=1e-3, steps=100, populations={{"a": 4}}, samples=[0])
        for t0 in range(0, 50, 10):
            rec.write("a", "v", t0, torch.ones(10, 1, 4))
        os._exit(9)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 9
    assert not p.exists()
    rec = recording.open(tmp_path / "run.h5.partial", allow_incomplete=True)
    assert not rec.complete and rec.report("a.v")[1].shape == (50, 4)


def test_overwrite_needs_permission(tmp_path):
    p = tmp_path / "run.h5"
    _run(p, steps=8)
    with pytest.raises(FileExistsError, match="exists; pass --overwrite"):
        _run(p, steps=8)
    _run(p, steps=12, overwrite=True)
    assert recording.open(p).report("fc1.v")[1].shape[0] == 12


def test_not_a_recording(tmp_path):
    txt = tmp_path / "notes.h5"
    txt.write_text("hello")
    with pytest.raises(RecordingError, match="not a readable HDF5 file"):
        recording.open(txt)
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = [1, 2, 3]
    with pytest.raises(RecordingError, match="not a SONATA file.*'magic' is missing"):
        recording.open(plain)
    with pytest.raises(RecordingError, match="no such file"):
        recording.open(tmp_path / "nope.h5")


def test_plain_sonata_file_is_readable(tmp_path):
    """A SONATA spike file from another tool (no /neurosal group) opens; metadata is empty."""
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f.attrs["magic"] = np.uint32(0x0A7A)
        f.attrs["version"] = np.array([0, 1], dtype=np.uint32)
        g = f.create_group("spikes/v1")
        g.create_dataset("timestamps", data=[0.5, 1.5])
        g.create_dataset("node_ids", data=np.array([3, 1], dtype=np.uint64))
    rec = recording.open(p)
    assert rec.populations == ["v1"] and not rec.is_neurosal and rec.metadata == {}
    t, ids = rec.spikes("v1")
    assert t.tolist() == [0.5, 1.5] and ids.tolist() == [3, 1]
