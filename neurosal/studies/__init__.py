"""Studies: grids of training trials (``studies/*.toml``) run into resumable JSON-lines files,
and the reports made from them.

* :mod:`.runs` — :func:`load_study`, :func:`expand`, :func:`sweep` (local workers or Ray),
  :func:`read_results`; the keys a study may set are :class:`~neurosal.training.TrainConfig`'s
  study options, plus card fields (``device.<field>``, ``network.<field>``);
* :mod:`.tables` — tables (mean ± SE over seeds) and plots.

May import: :mod:`neurosal.training` and what it builds on.
"""

from .tables import report
from .runs import TRAIN_OPTIONS, Study, expand, list_studies, load_study, read_results, run_trial, sweep, trial_id

__all__ = ["Study", "load_study", "expand", "trial_id", "run_trial", "sweep", "read_results", "TRAIN_OPTIONS",
           "report", "list_studies"]
