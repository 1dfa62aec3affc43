"""Datasets: ``digits`` (embedded, the default), ``mnist`` and ``fashion-mnist`` from IDX files,
``cifar10`` from its python batches. Nothing is downloaded.

Every dataset comes as a :class:`Split`: float images in [0, 1] flattened to
``[n, C*H*W]`` (``Split.shape`` is ``(C, H, W)``; :meth:`Split.images` reshapes) and integer
labels.

Files (in ``data_dir``, default ``data/<name>``):

* ``mnist`` / ``fashion-mnist``: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally ``.gz``
  (the files as distributed by LeCun et al. and Zalando Research).
* ``cifar10``: ``data_batch_1`` .. ``data_batch_5`` and ``test_batch`` (the "python
  version" of CIFAR-10), in ``data_dir`` or in ``data_dir/cifar-10-batches-py``.

A missing or corrupt file raises :class:`DatasetError` naming the file and saying how to
obtain it.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

__all__ = ["DATASETS", "Split", "DatasetError", "load", "read_idx"]

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10")

_HOWTO = {
    "mnist": "download the four IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
             "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) from http://yann.lecun.com/exdb/mnist/ "
             "(or a mirror) into {dir}, or pass --data-dir",
    "fashion-mnist": "download the four IDX files from https://github.com/zalandoresearch/fashion-mnist "
                     "(data/fashion) into {dir}, or pass --data-dir",
    "cifar10": "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and unpack it "
               "into {dir} (giving cifar-10-batches-py/), or pass --data-dir",
}


class DatasetError(ValueError):
    """A dataset file is missing or corrupt (the message names the file and the remedy)."""


@dataclass
class Split:
    """A train/test split: ``x`` in [0, 1], shape ``[n, C*H*W]``; ``y`` class labels."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    shape: tuple            # one sample's image shape (C, H, W)
    classes: int

    @property
    def features(self) -> int:
        return int(np.prod(self.shape))

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """``[n, C*H*W]`` -> ``[n, C, H, W]``."""
        return x.reshape(-1, *self.shape)


# ------------------------------------------------------------------------------ IDX
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): magic ``00 00 <type> <ndim>``, big-endian dims."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DatasetError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise DatasetError(f"{path}: truncated IDX header")
    dims = struct.unpack(">" + "I" * ndim, raw[4:head])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    need = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - head != need:
        raise DatasetError(f"{path}: corrupt IDX file: header says {dims} ({need} bytes of data), "
                           f"file has {len(raw) - head}")
    return np.frombuffer(raw, dtype=dtype, offset=head).reshape(dims)


def _find(d: Path, stem: str, name: str) -> Path:
    for cand in (d / stem, d / (stem + ".gz")):
        if cand.is_file():
            return cand
    raise DatasetError(f"{d / stem}[.gz]: missing; {_HOWTO[name].format(dir=d)}")


def _load_idx(name: str, d: Path):
    out, shapes = [], []
    for part in ("train", "t10k"):
        img_p, lab_p = _find(d, f"{part}-images-idx3-ubyte", name), _find(d, f"{part}-labels-idx1-ubyte", name)
        img, lab = read_idx(img_p), read_idx(lab_p)
        if img.ndim != 3:
            raise DatasetError(f"{img_p}: expected [n, rows, cols] images, got shape {img.shape}")
        if lab.ndim != 1 or len(lab) != len(img):
            raise DatasetError(f"{lab_p}: {len(lab)} labels for {len(img)} images in {img_p.name}")
        if len(img) == 0:
            raise DatasetError(f"{img_p}: holds zero images")
        if not np.issubdtype(lab.dtype, np.integer):
            raise DatasetError(f"{lab_p}: labels are {lab.dtype}, expected integers 0..9")
        if len(lab) and (lab.min() < 0 or lab.max() > 9):
            raise DatasetError(f"{lab_p}: labels outside 0..9 (found {lab.min()}..{lab.max()})")
        out.append((torch.from_numpy(img.astype(np.float32) / 255.0).reshape(len(img), -1),
                    torch.from_numpy(lab.astype(np.int64))))
        shapes.append((1, img.shape[1], img.shape[2]))
    if shapes[0] != shapes[1]:
        raise DatasetError(f"{d}: training images are {shapes[0][1]}x{shapes[0][2]}, test images "
                           f"{shapes[1][1]}x{shapes[1][2]}; both must have one size")
    (xtr, ytr), (xte, yte) = out
    return xtr, ytr, xte, yte, shapes[0]


# ------------------------------------------------------------------------------ CIFAR-10
class _CifarUnpickler(pickle.Unpickler):
    """CIFAR-10's python batches are pickles by design; a pickle can name any Python callable
    and run it while loading. This unpickler accepts only what the format uses (dicts, lists,
    bytes, strings and numbers, and numpy arrays) and refuses every other global by name."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refused {module}.{name}: a CIFAR-10 batch holds only arrays, "
                                         "lists and bytes")
        return super().find_class(module, name)


def _load_cifar(d: Path):
    if (d / "cifar-10-batches-py").is_dir():
        d = d / "cifar-10-batches-py"

    def batch(fname):
        p = d / fname
        if not p.is_file():
            raise DatasetError(f"{p}: missing; {_HOWTO['cifar10'].format(dir=d)}")
        try:
            with open(p, "rb") as fh:
                obj = _CifarUnpickler(fh, encoding="bytes").load()
            data, labels = obj[b"data"], obj[b"labels"]
        except Exception as exc:  # pickle raises many types on a corrupt file
            raise DatasetError(f"{p}: not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
        data = np.asarray(data)
        if not isinstance(labels, (list, np.ndarray)) or not all(
                isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels):
            raise DatasetError(f"{p}: labels must be a list of integers 0..9, got {type(labels).__name__}"
                               + (f" of {type(labels[0]).__name__}" if isinstance(labels, list) and labels else ""))
        if len(labels) and not all(0 <= int(v) <= 9 for v in labels):
            raise DatasetError(f"{p}: labels outside 0..9 (found {min(labels)}..{max(labels)})")
        if len(data) == 0:
            raise DatasetError(f"{p}: holds zero images")
        if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8 or len(labels) != len(data):
            raise DatasetError(f"{p}: corrupt CIFAR-10 batch: data {data.shape} {data.dtype}, {len(labels)} labels "
                               "(expected [n, 3072] uint8 and n labels)")
        return torch.from_numpy(data.astype(np.float32) / 255.0), torch.tensor(labels, dtype=torch.long)

    tr = [batch(f"data_batch_{i}") for i in range(1, 6)]
    xte, yte = batch("test_batch")
    return torch.cat([a for a, _ in tr]), torch.cat([b for _, b in tr]), xte, yte, (3, 32, 32)


# ------------------------------------------------------------------------------ entry point
def load(name: str = "digits", *, data_dir: Optional[str | Path] = None, seed: int = 0,
         test_fraction: float = 0.25, limit_train: Optional[int] = None,
         limit_test: Optional[int] = None, crop: Optional[int] = None,
         binarize: Optional[float] = None) -> Split:
    """Load a dataset by name (one of :data:`DATASETS`).

    ``digits`` is split at random (seeded) into train and test; the others come with their
    published split. ``limit_train`` / ``limit_test`` keep the first samples only. Input
    transforms, as some studies use them (DNN+NeuroSim: MNIST cropped to 20x20 and binarized):
    ``crop`` keeps the central ``crop x crop`` pixels, ``binarize`` maps pixels to 1 above the
    threshold and 0 otherwise.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    for arg, v in (("limit_train", limit_train), ("limit_test", limit_test)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"{arg} {v!r}: not allowed; allowed: an integer >= 1 (or None for all)")
    if name == "digits":
        from sklearn.datasets import load_digits
        dg = load_digits()
        x = torch.tensor(dg.data / 16.0, dtype=torch.float32)
        y = torch.tensor(dg.target, dtype=torch.long)
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
        n_test = int(len(y) * test_fraction)
        te, tr = perm[:n_test], perm[n_test:]
        xtr, ytr, xte, yte, shape = x[tr], y[tr], x[te], y[te], (1, 8, 8)
    else:
        d = Path(data_dir) if data_dir is not None else Path("data") / name
        if not d.is_dir():
            raise DatasetError(f"{d}: no such directory; {_HOWTO[name].format(dir=d)}")
        xtr, ytr, xte, yte, shape = _load_cifar(d) if name == "cifar10" else _load_idx(name, d)
    if limit_train is not None:
        xtr, ytr = xtr[:limit_train], ytr[:limit_train]
    if limit_test is not None:
        xte, yte = xte[:limit_test], yte[:limit_test]
    if crop is not None:
        c, h, w = shape
        if not 1 <= crop <= min(h, w):
            raise ValueError(f"crop must be in [1, {min(h, w)}] for {name} ({h}x{w} images), got {crop}")
        top, left = (h - crop) // 2, (w - crop) // 2
        cut = lambda x: x.reshape(-1, c, h, w)[:, :, top:top + crop, left:left + crop].reshape(len(x), -1)  # noqa
        xtr, xte, shape = cut(xtr), cut(xte), (c, crop, crop)
    if binarize is not None:
        if not 0 <= binarize < 1:
            raise ValueError(f"binarize is a threshold in [0, 1), got {binarize}")
        xtr, xte = (xtr > binarize).to(xtr.dtype), (xte > binarize).to(xte.dtype)
    return Split(name, xtr, ytr, xte, yte, shape=shape, classes=10)
