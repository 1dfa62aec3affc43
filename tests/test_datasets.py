"""Datasets: tiny files in each format round-trip; missing or corrupt files name the file and
say how to get it."""

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from neurosal.datasets import DatasetError, load, read_idx


def _idx(path, arr, gz=False):
    arr = np.asarray(arr, dtype=np.uint8)
    raw = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def _mnist_dir(d, n_train=12, n_test=5, gz=False):
    rng = np.random.default_rng(0)
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for part, n in (("train", n_train), ("t10k", n_test)):
        img = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        lab = rng.integers(0, 10, n, dtype=np.uint8)
        sfx = ".gz" if gz else ""
        _idx(d / f"{part}-images-idx3-ubyte{sfx}", img, gz)
        _idx(d / f"{part}-labels-idx1-ubyte{sfx}", lab, gz)
        out[part] = (img, lab)
    return out


@pytest.mark.parametrize("name,gz", [("mnist", False), ("fashion-mnist", True)])
def test_idx_round_trip(tmp_path, name, gz):
    ref = _mnist_dir(tmp_path / name, gz=gz)
    s = load(name, data_dir=tmp_path / name)
    assert s.shape == (1, 28, 28) and s.classes == 10 and s.features == 784
    assert s.x_train.shape == (12, 784) and s.x_test.shape == (5, 784)
    assert torch.allclose(s.x_train * 255, torch.tensor(ref["train"][0].reshape(12, -1), dtype=torch.float32))
    assert s.y_test.tolist() == ref["t10k"][1].tolist()
    assert s.images(s.x_test).shape == (5, 1, 28, 28)
    assert load(name, data_dir=tmp_path / name, limit_train=3).x_train.shape == (3, 784)


def test_cifar_round_trip(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(1)
    ref = {}
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, 4).tolist()
        with open(d / f, "wb") as fh:
            pickle.dump({b"data": data, b"labels": labels}, fh)
        ref[f] = (data, labels)
    s = load("cifar10", data_dir=tmp_path)                   # the parent folder works too
    assert s.shape == (3, 32, 32) and s.x_train.shape == (20, 3072) and s.x_test.shape == (4, 3072)
    assert torch.allclose(s.x_test * 255, torch.tensor(ref["test_batch"][0], dtype=torch.float32))
    assert s.y_train[:4].tolist() == ref["data_batch_1"][1]
    # a corrupt batch names the file
    (d / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DatasetError, match="data_batch_3: not a CIFAR-10 python batch"):
        load("cifar10", data_dir=d)


def test_missing_and_corrupt_idx(tmp_path):
    with pytest.raises(DatasetError, match=r"no such directory; download .*yann.lecun.com"):
        load("mnist", data_dir=tmp_path / "nowhere")
    d = tmp_path / "m"
    _mnist_dir(d)
    (d / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte\[.gz\]: missing; download"):
        load("mnist", data_dir=d)
    _mnist_dir(d)
    raw = (d / "train-images-idx3-ubyte").read_bytes()
    (d / "train-images-idx3-ubyte").write_bytes(raw[:-10])           # truncated
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte: corrupt IDX file"):
        load("mnist", data_dir=d)
    (d / "train-images-idx3-ubyte").write_bytes(b"PK\x03\x04zip")     # wrong format
    with pytest.raises(DatasetError, match="not an IDX file"):
        read_idx(d / "train-images-idx3-ubyte")
    _mnist_dir(d, n_train=12)
    _idx(d / "train-labels-idx1-ubyte", np.zeros(11))                 # count mismatch
    with pytest.raises(DatasetError, match="11 labels for 12 images"):
        load("mnist", data_dir=d)
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        load("imagenet")


def test_digits_default():
    s = load("digits")
    assert s.shape == (1, 8, 8) and s.x_train.shape[1] == 64 and len(s.y_test) == 449
    assert float(s.x_train.max()) == 1.0 and float(s.x_train.min()) == 0.0


def test_crop_and_binarize(tmp_path):
    """DNN+NeuroSim's input: the central 20x20 of MNIST, binarized."""
    ref = _mnist_dir(tmp_path / "m")
    s = load("mnist", data_dir=tmp_path / "m", crop=20, binarize=0.5)
    assert s.shape == (1, 20, 20) and s.features == 400 and s.x_train.shape == (12, 400)
    want = (ref["train"][0][:, 4:24, 4:24].reshape(12, -1) / 255.0) > 0.5
    assert torch.equal(s.x_train, torch.tensor(want, dtype=torch.float32))
    assert set(s.x_test.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match=r"crop must be in \[1, 28\]"):
        load("mnist", data_dir=tmp_path / "m", crop=29)
    with pytest.raises(ValueError, match="binarize is a threshold"):
        load("mnist", data_dir=tmp_path / "m", binarize=1.5)
    d = load("digits", crop=6)                      # any image dataset
    assert d.shape == (1, 6, 6) and d.x_train.shape[1] == 36



def test_a_crafted_cifar_batch_runs_no_code(tmp_path, exploit):
    """CIFAR-10's batches are pickles: only arrays, lists and bytes are accepted, so a batch
    that would run a command is refused by name and the command does not run."""
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(1)
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(d / f, "wb") as fh:
            pickle.dump({b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"labels": [1, 2]}, fh)
    payload, marker = exploit
    with open(d / "data_batch_2", "wb") as fh:
        pickle.dump({b"data": payload, b"labels": [1, 2]}, fh)
    with pytest.raises(DatasetError, match="data_batch_2: not a CIFAR-10 python batch.*refused posix.system"):
        load("cifar10", data_dir=d)
    assert not marker.exists()
