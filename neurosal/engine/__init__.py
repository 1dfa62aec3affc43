"""The engine: what runs a network on the chip through time, and the protocol every network
on the chip offers.

* :mod:`.protocol` — :class:`ChipNetwork` (what a network says about itself: how it runs, its
  analog layers, its cost units, its attention) and :class:`CostUnit`;
* :mod:`.simulator` — the timestep :class:`Simulator` (chunks of steps, event-driven or dense
  reads chosen by activity, event counts, :class:`Probe` s), :func:`encoder_for`;
* :mod:`.network` — :class:`Network`, a chain of :class:`Layer` s run by the simulator;
* :mod:`.run` — :func:`forward`, :func:`evaluate`, :func:`calibrate` for any network.

May import: :mod:`neurosal.crossbar`, :mod:`neurosal.neurons`, :mod:`neurosal.coding` and the
infrastructure (:mod:`neurosal.accel`, :mod:`neurosal.progress`).
"""

from .network import LOGIT_SCALE, Layer, Network
from .protocol import ENCODER_OF, ChipNetwork, Component, CostUnit, Scores
from .run import (activity_warnings, calibrate, calibrate_gains, calibration_batch, crossbars, device_of, evaluate, firing_rates, forward,
                  initialize_gains, loss_scores, population_counts)
from .simulator import DECODERS, VARIABLES, Probe, Run, RunResult, Simulator, encoder_for

__all__ = ["Layer", "Network", "Probe", "Run", "RunResult", "Component", "ENCODER_OF", "Simulator", "VARIABLES", "DECODERS", "encoder_for",
           "ChipNetwork", "CostUnit", "Scores", "forward", "loss_scores", "evaluate", "calibrate", "crossbars",
           "calibrate_gains", "calibration_batch", "initialize_gains", "population_counts", "firing_rates", "activity_warnings",
           "device_of", "LOGIT_SCALE"]
