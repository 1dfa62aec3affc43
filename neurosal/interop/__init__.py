"""With the rest of the field: NIR graphs out of and into the chip, and torch models put on it.

* :mod:`.nir` — :func:`to_nir` / :func:`from_nir` (NIR, the Neuromorphic Intermediate
  Representation), :func:`write` / :func:`read`;
* :mod:`.conversion` — :func:`convert`: a torch model's ``nn.Linear`` and ``nn.Conv2d`` on
  crossbars, programmed by counted write-and-verify.

May import: :mod:`neurosal.engine`, :mod:`neurosal.crossbar`, :mod:`neurosal.neurons`,
:mod:`neurosal.devices`, :mod:`neurosal.files`; nir.
"""

from .conversion import ConvertReport, convert
from .nir import NIRError, ProgramReport, from_nir, read, to_nir, write

__all__ = ["convert", "ConvertReport", "to_nir", "from_nir", "read", "write", "NIRError", "ProgramReport"]
