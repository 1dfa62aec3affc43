"""neurosal: analog in-memory-computing neuromorphic hardware, simulated in PyTorch, trained on chip.

The package is a house of rooms, each named for what it holds (bottom to top; a room imports
only rooms below it, checked by ``tests/test_layout.py``):

* infrastructure — :mod:`.cards` (TOML cards), :mod:`.accel` (where a run happens),
  :mod:`.files` (outputs that lose nothing), :mod:`.progress`;
* :mod:`.devices` — device cards, response families, nonidealities;
* :mod:`.crossbar` — arrays, periphery, counters, write-and-verify, analog layers, PulseSGD;
* :mod:`.neurons`, :mod:`.coding`, :mod:`.coprocessor` — neurons, encoders and decoders, the
  digital co-processor and its attention blocks;
* :mod:`.engine` — the timestep simulator and the protocol every network on the chip offers;
* :mod:`.networks` — recipes, builders, SAnet and the charge-domain models, checkpoints;
* :mod:`.cost` — the ledger of events and its pricing;
* :mod:`.learning` — the on-chip learning rules;
* :mod:`.datasets`, :mod:`.recording`, :mod:`.plots` — data in, recordings and plots out;
* :mod:`.training` — :class:`~neurosal.training.TrainConfig` and the training driver;
* :mod:`.experiments` — simulate-and-record, cost measurement, coding comparison, drift, Grad-CAM, demo;
* :mod:`.studies` — sweeps and reports; :mod:`.interop` — NIR and torch-model conversion;
* :mod:`.cli` — the command line.

``neurosal.convert(model, device=...)`` puts a torch model on crossbars.
"""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("neurosal")
except PackageNotFoundError:  # pragma: no cover - a bare source tree
    __version__ = "unknown"

from .interop.conversion import convert  # noqa: E402  (neurosal.convert: a torch model onto crossbars)

__all__ = ["convert", "__version__"]
