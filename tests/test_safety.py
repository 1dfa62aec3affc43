"""Nothing lost, nothing run: outputs owned and replaced atomically, full disks and Ctrl-C
that keep what was finished, checkpoints that refuse the wrong chip, hostile HDF5, resumed
training equal to an uninterrupted run, and a named error (exit 2) for every user mistake."""

import errno
import os
import pickle
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from neurosal import recording, training
from neurosal.training import loop as training_loop
from neurosal.cli import main
from neurosal.files import Owner, OutputBusyError, OutputError, atomic
from neurosal.networks import build, load_checkpoint, save_checkpoint
from neurosal.recording import Recorder, RecordingError
from neurosal.experiments import simulate

SIM = dict(network="mlp-64-100-10", device="ideal", coding="spike", steps=8, samples=20, batch=20,
           record=("spikes", "v"), record_samples=4, progress=False)


def _ctrl_c_on_call(n: int, fn):
    """``fn``, except that its ``n``-th call is interrupted as by Ctrl-C."""
    calls = {"n": 0}

    def wrapped(*a, **k):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return fn(*a, **k)
    return wrapped


def _cli(argv, capsys):
    """Run the command line in this process: (exit code, stderr)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:          # argparse's usage errors
        code = exc.code
    return code, capsys.readouterr().err


# ============================================================== 1. outputs owned and atomic
def test_a_second_run_on_the_same_output_fails_at_once_and_touches_nothing(tmp_path):
    out = tmp_path / "run.h5"
    simulate(**SIM, out=out)                                  # an older, complete file
    old = out.read_bytes()
    first = Recorder(out, dt=1e-3, steps=4, populations={"a": 3}, samples=range(2), overwrite=True)
    first.write("a", "spikes", 0, torch.ones(4, 2, 3))
    with pytest.raises(OutputBusyError, match="another neurosal run is writing it"):
        simulate(**SIM, out=out, overwrite=True)
    with pytest.raises(OutputBusyError):
        training.train("mlp-64-100-10", "ideal", out=out, overwrite=True, progress=False)
    assert out.read_bytes() == old                            # the older file is intact...
    first.close(ok=True)                                      # ...and the first run finishes normally
    rec = recording.open(out)
    assert rec.complete and rec.summary()["populations"]["a"]["spikes"] == 24
    assert not (tmp_path / "run.h5.partial").exists() and not (tmp_path / ".run.h5.lock").exists()
    simulate(**SIM, out=out, overwrite=True)                  # free again


def test_two_processes_on_one_output(tmp_path):
    """The lock holds across processes (a run in another process stops at once, exit 2)."""
    out = tmp_path / "x.h5"
    with Owner(out):
        r = subprocess.run([str(Path(os.sys.executable).parent / "neurosal"), "simulate", "--network",
                            "mlp-64-100-10", "--device", "ideal", "--samples", "5", "--out", str(out),
                            "--threads", "1"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "another neurosal run is writing it" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not out.exists()


@pytest.mark.parametrize("kind", ["missing folder", "folder", "exists"])
def test_out_is_checked_before_any_work(tmp_path, monkeypatch, capsys, kind):
    import neurosal.datasets as ds
    monkeypatch.setattr(ds, "load", lambda *a, **k: pytest.fail("work started before --out was checked"))
    out = {"missing folder": tmp_path / "no" / "c.pt", "folder": tmp_path, "exists": tmp_path / "c.pt"}[kind]
    if kind == "exists":
        out.write_bytes(b"keep me")
    msg = {"missing folder": "does not exist", "folder": "is a folder", "exists": "exists; pass --overwrite"}[kind]
    for argv in (["train", "--network", "mlp-64-100-10", "--device", "ideal", "--out", out],
                 ["simulate", "--network", "mlp-64-100-10", "--device", "ideal", "--out", out]):
        code, err = _cli(argv, capsys)
        assert code == 2 and msg in err and "Traceback" not in err, err
    if kind == "exists":
        assert out.read_bytes() == b"keep me"


def test_checkpoint_on_a_full_disk_keeps_the_old_one(tmp_path, monkeypatch):
    """Injected ENOSPC in the middle of torch.save: OutputError, the old checkpoint intact and
    loadable, no temporary file left."""
    net = build("mlp-64-100-10", device="moderate", coding="rate")
    ck = tmp_path / "c.pt"
    save_checkpoint(net, ck)
    old = ck.read_bytes()
    import builtins
    real = builtins.open

    class Dying:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.fh.close()

        def write(self, data):
            self.fh.write(bytes(data[:100]))
            raise OSError(errno.ENOSPC, "No space left on device")

    def dying_open(file, mode="r", *a, **k):
        fh = real(file, mode, *a, **k)
        return Dying(fh) if str(file).endswith(".tmp") and "w" in mode else fh
    monkeypatch.setattr(builtins, "open", dying_open)
    with pytest.raises(OutputError, match=r"disk is full; the earlier .*c.pt is untouched"):
        save_checkpoint(build("mlp-64-100-10", device="moderate", coding="rate", seed=5), ck)
    monkeypatch.setattr(builtins, "open", real)
    assert ck.read_bytes() == old and sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]
    load_checkpoint(build("mlp-64-100-10", device="moderate", coding="rate"), ck)


def test_recording_on_a_full_disk_injected(tmp_path, monkeypatch, capsys):
    out = tmp_path / "r.h5"
    out.write_bytes(b"older result")
    calls = {"n": 0}
    real = Recorder._write

    def failing(self, *a):
        calls["n"] += 1
        if calls["n"] > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *a)
    monkeypatch.setattr(Recorder, "_write", failing)
    code, err = _cli(["simulate", "--network", "mlp-64-100-10", "--device", "ideal", "--samples", "20",
                      "--record", "spikes,v", "--out", out, "--overwrite", "--threads", "1"], capsys)
    assert code == 1 and "the disk is full" in err and "marked incomplete" in err and "Traceback" not in err
    assert out.read_bytes() == b"older result"
    rec = recording.open(tmp_path / "r.h5.partial", allow_incomplete=True)
    assert rec.complete is False
    assert not (tmp_path / ".r.h5.lock").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 6 MiB tmpfs (needs root; skipped otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    d = tmp_path / "disk"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(d)], capture_output=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    yield d
    subprocess.run(["umount", "-l", str(d)])


def test_recording_on_a_real_full_disk(small_disk, capsys):
    """A real full file system: one named error (no h5py traceback stream, no crash), the
    partial file marked incomplete and readable, the old file intact."""
    out = small_disk / "r.h5"
    out.write_bytes(b"older result")
    code, err = _cli(["simulate", "--network", "mlp-64-100-10", "--device", "ideal", "--samples", "128",
                      "--steps", "400", "--record", "spikes,v,current", "--record-samples", "128", "--out", out,
                      "--overwrite", "--threads", "1", "--skip-size-check"], capsys)
    assert code == 1 and "the disk is full" in err and "Traceback" not in err, err
    assert out.read_bytes() == b"older result"
    assert recording.open(small_disk / "r.h5.partial", allow_incomplete=True).complete is False


def test_recording_too_large_for_the_disk_is_refused_before_work(small_disk, capsys):
    """The size estimate refuses, with the estimate and the free space, before any sample runs
    and without touching the old file."""
    out = small_disk / "r.h5"
    out.write_bytes(b"older result")
    code, err = _cli(["simulate", "--network", "mlp-64-100-10", "--device", "ideal", "--samples", "128",
                      "--steps", "400", "--record", "spikes,v,current", "--record-samples", "128", "--out", out,
                      "--overwrite", "--threads", "1"], capsys)
    # traces exactly: (100 + 10) neurons x 2 variables x 4 B; spikes worst case: (64 + 110) x 16 B
    est = 400 * 128 * ((100 + 10) * 2 * 4 + (64 + 110) * 16) / 1e9
    assert code == 1 and f"could grow to {est:,.3g} GB" in err and "GB are free there" in err, err
    assert "400 steps x 128 recorded samples x 174 recorded neurons" in err and "Traceback" not in err
    assert out.read_bytes() == b"older result"
    assert sorted(p.name for p in small_disk.iterdir()) == ["r.h5"]


def test_a_recording_of_a_hundred_million_steps_is_refused(tmp_path, capsys):
    """Today's 1.6 GB-in-two-minutes case: refused at once, nothing written."""
    code, err = _cli(["simulate", "--network", "mlp-64-100-10", "--device", "ideal", "--samples", "4",
                      "--steps", "100000000", "--record", "spikes", "--out", tmp_path / "r.h5", "--threads", "1"],
                     capsys)
    assert code == 1 and "could grow to 1.11e+03 GB (100,000,000 steps x 4 recorded samples" in err, err
    assert "--skip-size-check" in err and list(tmp_path.iterdir()) == []


def test_checkpoint_on_a_real_full_disk(small_disk):
    net = build("mlp-64-100-10", device="moderate", coding="rate")
    ck = small_disk / "c.pt"
    save_checkpoint(net, ck)
    old = ck.read_bytes()
    st = os.statvfs(small_disk)
    (small_disk / "filler").write_bytes(b"\0" * (st.f_bavail * st.f_frsize - 8192))
    with pytest.raises(OutputError, match="disk is full"):
        save_checkpoint(net, ck)
    assert ck.read_bytes() == old
    assert sorted(p.name for p in small_disk.iterdir()) == ["c.pt", "filler"]


def test_atomic_leaves_the_old_file_on_any_error(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert p.read_text() == "old" and [q.name for q in tmp_path.iterdir()] == ["a.txt"]
    with atomic(p) as tmp:
        tmp.write_text("new")
    assert p.read_text() == "new"


def test_a_rerun_keeps_an_earlier_unfinished_partial(tmp_path, capsys):
    out = tmp_path / "r.h5"
    stale = tmp_path / "r.h5.partial"
    stale.write_bytes(b"an unfinished run")
    simulate(**SIM, out=out)
    assert (tmp_path / "r.h5.partial.1").read_bytes() == b"an unfinished run"
    assert "kept as" in capsys.readouterr().err and recording.open(out).complete


def test_ctrl_c_in_simulate(tmp_path, monkeypatch, capsys):
    from neurosal.engine import simulator

    def interrupted(self, *a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(simulator.Simulator, "run", interrupted)
    code, err = _cli(["simulate", "--network", "mlp-64-100-10", "--device", "ideal", "--samples", "5",
                      "--out", tmp_path / "r.h5", "--threads", "1"], capsys)
    assert code == 130 and "interrupted" in err and "r.h5.partial" in err and "Traceback" not in err
    assert not (tmp_path / "r.h5").exists() and not (tmp_path / ".r.h5.lock").exists()


# ============================================================== 3. resume, bit for bit
def _state(ck):
    c = torch.load(ck, weights_only=True)
    return c


def _same(a, b, where="") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.parametrize("rule,device", [("bp", "moderate"), ("hybrid", "severe"), ("dfa", "mild"),
                                         ("offchip", "severe")])
def test_interrupted_and_resumed_training_equals_an_uninterrupted_run(tmp_path, monkeypatch, capsys, rule, device):
    args = ["train", "--network", "mlp-64-100-10", "--device", device, "--rule", rule, "--limit-train", "120",
            "--limit-test", "60", "--batch", "8", "--seed", "3", "--json", "--threads", "1"]
    whole = tmp_path / "whole.pt"
    assert _cli(args + ["--epochs", "3", "--out", whole], capsys)[0] == 0
    # the same run, stopped by Ctrl-C in the second epoch's evaluation
    real = training_loop.evaluate
    monkeypatch.setattr(training_loop, "evaluate", _ctrl_c_on_call(2, real))
    part = tmp_path / "part.pt"
    code, err = _cli(args + ["--epochs", "3", "--out", part], capsys)
    assert code == 130 and "the checkpoint of epoch 1" in err and f"--resume {part}" in err, err
    monkeypatch.setattr(training_loop, "evaluate", real)
    # resumed with only --resume and --epochs: everything else from the checkpoint
    code, _ = _cli(["train", "--resume", part, "--epochs", "3", "--json", "--threads", "1"], capsys)
    assert code == 0
    a, b = _state(whole), _state(part)
    for k in ("crossbars", "digital", "rule_state", "rngs"):
        _same(a[k], b[k], k)
    ra, rb = a["result"], b["result"]
    for k in ("history", "pulses", "verify_reads", "layers", "energy_j", "cost"):
        _same(ra[k], rb[k], k)
    _same(a["train"]["ledger"], b["train"]["ledger"], "ledger")


def test_resume_refuses_a_different_configuration(tmp_path, capsys):
    ck = tmp_path / "c.pt"
    base = ["train", "--network", "mlp-64-100-10", "--device", "moderate", "--rule", "bp", "--limit-train", "40",
            "--limit-test", "20", "--json", "--threads", "1"]
    assert _cli(base + ["--out", ck], capsys)[0] == 0
    code, err = _cli(["train", "--resume", ck, "--epochs", "2", "--device", "severe"], capsys)
    assert code == 2 and "device = 'moderate'" in err and "device = 'severe'" in err
    code, err = _cli(["train", "--resume", ck, "--epochs", "1"], capsys)
    assert code == 2 and "already finished 1 epoch" in err
    code, err = _cli(["train", "--resume", tmp_path / "none.pt"], capsys)
    assert code == 2 and "no such checkpoint" in err


# ============================================================== 2. loading checks what it loads
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    ck = tmp_path_factory.mktemp("ck") / "moderate-rate.pt"
    training.train("mlp-64-100-10", "moderate", rule="bp", coding="rate", limit_train=40, limit_test=20,
                   progress=False, out=ck)
    return ck


@pytest.mark.parametrize("argv,msg", [
    (["--device", "ideal"], "has device 'moderate', not 'ideal'"),
    (["--coding", "spike"], "trained with coding 'rate', not 'spike'"),
    (["--network", "mlp-784-400-400-10"], "holds network 'mlp-64-100-10', not 'mlp-784-400-400-10'"),
])
def test_a_checkpoint_refuses_another_device_coding_or_network(trained, capsys, argv, msg):
    base = {"--network": "mlp-64-100-10", "--device": "moderate", "--coding": "rate"}
    base.update(dict(zip(argv[::2], argv[1::2])))
    for cmd in (["simulate", "--samples", "4"], ["cost", "--rule", "none"]):
        code, err = _cli(cmd + [x for kv in base.items() for x in kv] + ["--checkpoint", trained], capsys)
        assert code == 2 and msg in err and "Traceback" not in err, err


def test_a_checkpoint_refuses_an_edited_card_and_other_data(trained, tmp_path):
    import re
    from neurosal.cards import resolve_card
    text = resolve_card("moderate", "devices").read_text()
    p = tmp_path / "moderate.toml"
    p.write_text(re.sub(r"(?m)^c2c\s*=\s*([0-9.e-]+)", lambda m: f"c2c = {float(m.group(1)) + 0.01}", text))
    assert p.read_text() != text
    net = build("mlp-64-100-10", device=str(p), coding="rate", input_shape=(1, 8, 8), classes=10)
    with pytest.raises(ValueError, match=r"device card 'moderate' differs .* in noise"):
        load_checkpoint(net, trained)
    net = build("mlp-64-100-10", device="moderate", coding="rate", input_shape=(1, 28, 28), classes=10)
    with pytest.raises(ValueError, match=r"trained on inputs of shape \[1, 8, 8\], these data have \[1, 28, 28\]"):
        load_checkpoint(net, trained)


# ---------------------------------------------------------------- hostile HDF5
@pytest.fixture
def good_recording(tmp_path):
    out = tmp_path / "good.h5"
    simulate(**SIM, out=out)
    return out


def _edit(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)
    return path


HOSTILE = {
    "missing dataset": (lambda f: f["spikes/fc1"].__delitem__("node_ids"), "node_ids: missing"),
    "group for a dataset": (lambda f: (f["spikes/fc1"].__delitem__("timestamps"),
                                       f["spikes/fc1"].create_group("timestamps")),
                            "a group where a dataset belongs"),
    "external link": (lambda f: (f["spikes/fc1"].__delitem__("timestamps"),
                                 f["spikes/fc1"].__setitem__("timestamps", h5py.ExternalLink("/etc/other.h5", "/x"))),
                      "external link to /etc/other.h5"),
    "string n_neurons": (lambda f: f["spikes/fc1"].attrs.__setitem__("n_neurons", "100"), "is not an integer"),
    "string complete": (lambda f: f["neurosal"].attrs.__setitem__("complete", "False"), "is not a boolean"),
    "string magic": (lambda f: f.attrs.__setitem__("magic", "0x0A7A"), "is not an integer"),
    "string data": (lambda f: (f["report/fc1.v"].__delitem__("data"),
                               f["report/fc1.v"].create_dataset("data", data=np.array([["a"]], dtype="S1"))),
                    "expected numbers"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_malformed_sonata_gets_a_named_error(good_recording, capsys, case):
    edit, msg = HOSTILE[case]
    _edit(good_recording, edit)
    with pytest.raises(RecordingError, match=msg):
        recording.open(good_recording)
    code, err = _cli(["inspect", good_recording], capsys)
    assert code == 2 and msg.split(":")[-1].strip() in err and "Traceback" not in err


def test_a_string_complete_is_not_taken_as_finished(good_recording):
    """bool('False') is True: a reader that trusted it would read an unfinished run as finished."""
    _edit(good_recording, lambda f: f["neurosal"].attrs.__setitem__("complete", np.bytes_(b"False")))
    with pytest.raises(RecordingError, match="not a boolean"):
        recording.open(good_recording)


def test_a_huge_report_is_not_loaded(good_recording, tmp_path, capsys):
    """A 10^12 x 10^6 report (a few KiB on disk, chunked and never written) asks for 3.6 EiB;
    the reader refuses it by name and the raster reads only one sample's spikes."""
    def huge(f):
        g = f["report/fc1.v"]
        del g["data"]
        g.create_dataset("data", shape=(10**12, 10**6), maxshape=(None, 10**6), dtype="f4", chunks=(1, 1024))
    _edit(good_recording, huge)
    rec = recording.open(good_recording)
    assert rec.summary()["reports"]["fc1.v"]["shape"] == [10**12, 10**6]
    with pytest.raises(RecordingError, match="would load .* GiB, more than the limit"):
        rec.trace("fc1", "v", 0)
    with pytest.raises(RecordingError, match="would load"):
        rec.report("fc1.v")
    code, err = _cli(["inspect", good_recording, "--raster", "-o", tmp_path / "r.png"], capsys)
    assert code == 0 or ("would load" in err and "Traceback" not in err)


def test_spike_trains_scan_in_blocks(good_recording, monkeypatch):
    """One sample's spikes, read block by block, equal the filter of all spikes."""
    rec = recording.open(good_recording)
    t_all, ids = rec.spikes("fc1")
    n = rec.n_neurons("fc1")
    monkeypatch.setattr(recording.reader, "_SCAN", 7)
    for s in range(4):
        t, i = rec.spike_trains("fc1", s)
        sel = ids // n == s
        assert np.array_equal(t, t_all[sel]) and np.array_equal(i, ids[sel] % n)


# ============================================================== 4. a named error for every mistake
def _mnist(d, train_shape=(3, 28, 28), test_shape=(2, 28, 28), labels=None):
    import struct
    d.mkdir(parents=True, exist_ok=True)

    def idx(p, arr):
        arr = np.asarray(arr, dtype=np.uint8)
        p.write_bytes(bytes([0, 0, 8, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes())
    for part, shape in (("train", train_shape), ("t10k", test_shape)):
        idx(d / f"{part}-images-idx3-ubyte", np.zeros(shape))
        idx(d / f"{part}-labels-idx1-ubyte", np.zeros(shape[0]) if labels is None else labels[:shape[0]])
    return d


def _cifar(d, labels):
    d.mkdir(parents=True, exist_ok=True)
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(d / f, "wb") as fh:
            pickle.dump({b"data": np.zeros((len(labels), 3072), np.uint8), b"labels": labels}, fh)
    return d


def _mistakes(tmp):
    """(argv, message) for each user mistake the issue lists."""
    t = ["train", "--network", "mlp-64-100-10", "--device", "ideal", "--threads", "1"]
    (tmp / "binary.toml").write_bytes(b"name = \"x\"\n\x00\x01\x02")
    (tmp / "latin1.toml").write_bytes("name = \"caf\xe9\"\n".encode("latin-1"))
    (tmp / "empty.toml").write_text("")
    (tmp / "cards").mkdir()
    zero = _mnist(tmp / "zero", train_shape=(0, 28, 28))
    sizes = _mnist(tmp / "sizes", test_shape=(2, 20, 20))
    c_range = _cifar(tmp / "c_range", [3, 12])
    c_type = _cifar(tmp / "c_type", ["cat", "dog"])
    return [
        (["train", "--network", "mlp-64-100-10", "--device", tmp / "binary.toml"], "binary file, not a card"),
        (["train", "--network", "mlp-64-100-10", "--device", tmp / "latin1.toml"], "not a UTF-8 text file"),
        (["train", "--network", "mlp-64-100-10", "--device", tmp / "empty.toml"],
         "the card is empty; it needs at least: name"),
        (["train", "--network", "mlp-64-100-10", "--device", tmp / "cards"], "is a folder, not a card file"),
        (t + ["--dataset", "mnist", "--data-dir", zero], "holds zero images"),
        (t + ["--dataset", "mnist", "--data-dir", sizes], "training images are 28x28, test images 20x20"),
        (t + ["--dataset", "cifar10", "--data-dir", c_range], "labels outside 0..9"),
        (t + ["--dataset", "cifar10", "--data-dir", c_type], "labels must be a list of integers"),
        (t + ["--limit-train", "0"], "argument --limit-train: 0 is out of range; allowed: an integer >= 1"),
        (t + ["--limit-train", "-5"], "argument --limit-train: -5 is out of range"),
        (t + ["--limit-test", "0"], "argument --limit-test: 0 is out of range"),
        (["cost", "--network", "mlp-64-100-10", "--device", "ideal", "--batch", "0"],
         "argument --batch: 0 is out of range"),
        (t + ["--steps", "0"], "argument --steps: 0 is out of range"),
        (t + ["--steps", "-3"], "argument --steps: -3 is out of range; allowed: an integer >= 1"),
        (["simulate", "--network", "mlp-64-100-10", "--device", "ideal", "--record-samples", "0"],
         "argument --record-samples: 0 is out of range"),
        (["simulate", "--network", "mlp-64-100-10", "--device", "ideal", "--record-samples", "-2"],
         "argument --record-samples: -2 is out of range"),
        (t + ["--seed", str(2**64)], "argument --seed: 18446744073709551616 is out of range; allowed: an integer "
                                     "from 0 to 4294967295"),
        (t + ["--lr", "inf"], "argument --lr: inf is out of range; allowed: a finite number in (0, inf)"),
        (t + ["--lr", "nan"], "argument --lr: nan is out of range"),
        (t + ["--epochs", "0"], "argument --epochs: 0 is out of range"),
        (["devices", "curve", "ideal", "--pulses", "100000000"],
         "argument --pulses: 100000000 is out of range; allowed: an integer from 1 to 100000"),
        (["devices", "curve", "ideal", "--pulses", "many"], "argument --pulses: 'many' is not an integer"),
    ]


def test_every_user_mistake_gets_a_named_error(tmp_path, capsys):
    for argv, msg in _mistakes(tmp_path):
        code, err = _cli(argv, capsys)
        assert code == 2, (argv, code, err)
        assert msg in err, (argv, err)
        assert "Traceback" not in err


def test_an_unreadable_card(tmp_path, monkeypatch, capsys):
    """A card the user may not read (injected: root reads everything) is a named error."""
    p = tmp_path / "secret.toml"
    p.write_text('name = "x"\n')
    import builtins
    real = builtins.open

    def guarded(file, *a, **k):
        if str(file) == str(p):
            raise PermissionError(errno.EACCES, "Permission denied", str(p))
        return real(file, *a, **k)
    monkeypatch.setattr(builtins, "open", guarded)
    code, err = _cli(["devices", "show", p], capsys)
    assert code == 2 and "cannot be read (permission denied)" in err and "secret.toml" in err


def test_api_checks_match_the_command_line():
    with pytest.raises(ValueError, match="--limit-test 0: not allowed"):
        training.train("mlp-64-100-10", "ideal", limit_test=0, progress=False)
    with pytest.raises(ValueError, match="--steps -3: not allowed"):
        training.train("mlp-64-100-10", "ideal", steps=-3, progress=False)
    with pytest.raises(ValueError, match="steps 0: not allowed"):
        build("mlp-64-100-10", device="ideal", coding="spike", steps=0)
    with pytest.raises(ValueError, match="record_samples 0: not allowed"):
        simulate("mlp-64-100-10", "ideal", record_samples=0, progress=False)
    from neurosal.devices import Device
    with pytest.raises(ValueError, match="pulses 100000000: not allowed"):
        Device("ideal").curve(100_000_000)


def test_ctrl_c_in_a_sweep_says_what_finished(tmp_path, monkeypatch, capsys):
    import neurosal.studies.runs as sw
    study = tmp_path / "s.toml"
    study.write_text('name = "s"\n[base]\nnetwork = "mlp-64-100-10"\nepochs = 1\nlimit_train = 16\n'
                     'limit_test = 8\n[grid]\ndevice = ["ideal"]\nseed = [0, 1, 2]\n')
    monkeypatch.setattr(sw, "run_trial", _ctrl_c_on_call(2, sw.run_trial))
    out = tmp_path / "r.jsonl"
    code, err = _cli(["sweep", study, "--out", out, "--threads", "1"], capsys)
    assert code == 130 and f"1 finished trial(s) in {out}" in err and "Traceback" not in err, err
    assert len(sw.read_results(out)) == 1 and not (tmp_path / ".r.jsonl.lock").exists()


def test_a_plot_output_is_checked_before_the_work(tmp_path, monkeypatch, capsys):
    import neurosal.cli.cost as cost
    monkeypatch.setattr(cost, "measure", lambda *a, **k: pytest.fail("work started before -o was checked"))
    code, err = _cli(["cost", "--network", "mlp-64-100-10", "--device", "ideal", "-o", tmp_path], capsys)
    assert code == 2 and "is a folder" in err
