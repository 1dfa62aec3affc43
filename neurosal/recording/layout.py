"""The layout of a recording: constants shared by the writer and the reader, and the versions
of everything that shapes a run's numbers.

May import: nothing of neurosal.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import h5py
import norse
import numpy as np
import scipy
import torch

__all__ = ["MAGIC", "VERSION", "SORTING", "UNITS", "FORMAT", "RecordingError", "versions", "partial_path"]

MAGIC = 0x0A7A
VERSION = (0, 1)
SORTING = h5py.enum_dtype({"none": 0, "by_id": 1, "by_time": 2}, basetype="u1")
UNITS = {"v": "threshold", "current": "weight", "spikes": ""}
FORMAT = "neurosal-recording-1"


class RecordingError(ValueError):
    """A file is missing, is not a neurosal/SONATA recording, or was not finished."""


def versions() -> dict:
    """Versions of everything that shapes a run's numbers."""
    try:
        ns = version("neurosal")
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        ns = "unknown"
    return {"neurosal": ns, "torch": torch.__version__, "norse": getattr(norse, "__version__", "unknown"),
            "numpy": np.__version__, "scipy": scipy.__version__, "h5py": h5py.__version__}


def partial_path(path: Path) -> Path:
    """Where a recording is written until its run ends (``<out>.partial``)."""
    return path.with_name(path.name + ".partial")
