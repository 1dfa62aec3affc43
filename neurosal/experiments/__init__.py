"""Experiments: what runs a chip end to end for a purpose, above training.

* :mod:`.inference` — run a network on dataset samples through the engine and record it (HDF5);
* :mod:`.costing` — the cost of an inference and of a training step (fills and prices a ledger);
* :mod:`.compare` — the same network trained rate- and spike-coded, side by side;
* :mod:`.drift` — accuracy after programming as the devices drift;
* :mod:`.gradcam` — Grad-CAM of SAnet stages and the ablation of attention blocks (off chip);
* :mod:`.demo` — what ``make demo`` runs.

May import: everything below the command line.
"""

from .compare import compare_coding, plot_comparison, test_events
from .drift import COMPENSATIONS, accuracy_over_time, plot_drift
from .gradcam import ablation, off_chip, plot_gradcam, stage_cams
from .costing import measure
from .inference import ENCODER_OF, simulate

__all__ = ["simulate", "ENCODER_OF", "measure", "compare_coding", "plot_comparison", "test_events",
           "accuracy_over_time", "plot_drift", "COMPENSATIONS", "ablation", "off_chip", "plot_gradcam", "stage_cams"]
