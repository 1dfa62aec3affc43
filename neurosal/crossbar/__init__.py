"""Crossbar arrays of differential device pairs, their periphery, analog layers, and the
pulse optimizer.

* :mod:`.array` — :class:`Crossbar` (storage, reads, writes of the array);
* :mod:`.counters` — :class:`Counters` of every event the cost model prices;
* :mod:`.periphery` — DAC, ADC, and :func:`calibrate_adc`;
* :mod:`.programming` — write-and-verify (:func:`program`, :class:`ProgramResult`);
* :mod:`.layers` — :class:`AnalogLinear`, :class:`AnalogConv2d` (``torch.nn`` modules whose
  weights live on crossbars and follow ``module.to(...)``);
* :mod:`.optim` — :class:`PulseSGD`;
* :mod:`.pulse_train` — the in-array stochastic pulse-train update (Gokmen & Vlasov 2016).

May import: :mod:`neurosal.devices`, :mod:`neurosal.accel`.
"""

from ..devices import PulseError, check_pulses
from .array import Crossbar
from .counters import Counters
from .layers import AnalogConv2d, AnalogLinear, analog_layers
from .optim import PulseSGD, record_outer
from .periphery import calibrate_adc
from .programming import ProgramResult, program
from .pulse_train import apply_pulse_trains, coincidences

__all__ = ["Counters", "Crossbar", "ProgramResult", "AnalogLinear", "AnalogConv2d", "PulseSGD", "PulseError",
           "analog_layers", "apply_pulse_trains", "calibrate_adc", "coincidences", "record_outer", "check_pulses", "program"]
