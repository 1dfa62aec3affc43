"""Training on the chip: the one definition of every training option, and the driver.

* :mod:`.config` — :class:`TrainConfig` (every option; the command line, studies, checkpoints
  and checks derive from it) and :class:`TrainResult`;
* :mod:`.loop` — :func:`train` (epochs, cost ledger, checkpoints that resume bit for bit),
  :func:`resume_config`;
* :mod:`.strategies` — attention strategies (gate by need);
* :mod:`.log` — per-epoch CSV / JSON-lines / TensorBoard logs.

May import: everything below the experiment layer (:mod:`neurosal.learning`,
:mod:`neurosal.networks`, :mod:`neurosal.engine`, :mod:`neurosal.cost`, :mod:`neurosal.datasets`,
:mod:`neurosal.devices`, infrastructure).
"""

from .config import RESUME_FREE, STUDY_OPTIONS, Option, TrainConfig, TrainResult, options, parse_attach
from .loop import resume_config, train
from .strategies import attention_deviation

__all__ = ["TrainConfig", "TrainResult", "Option", "options", "train", "resume_config", "attention_deviation",
           "STUDY_OPTIONS", "RESUME_FREE", "parse_attach"]
