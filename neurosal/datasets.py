"""Datasets: ``digits`` (scikit-learn's 8x8 digits, embedded: the default).

Images come as float tensors in [0, 1], flattened to ``[n, features]``, with integer
labels. Nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["DATASETS", "Split", "load"]

DATASETS = ("digits",)


@dataclass
class Split:
    """A train/test split: ``x`` in [0, 1], shape ``[n, features]``; ``y`` class labels."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    shape: tuple            # one sample's image shape (C, H, W)
    classes: int


def load(name: str = "digits", *, seed: int = 0, test_fraction: float = 0.25) -> Split:
    """Load a dataset by name; ``digits`` is split at random (seeded) into train and test."""
    if name != "digits":
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(len(y) * test_fraction)
    te, tr = perm[:n_test], perm[n_test:]
    return Split("digits", x[tr], y[tr], x[te], y[te], shape=(1, 8, 8), classes=10)
