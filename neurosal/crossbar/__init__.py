"""Crossbar arrays of differential device pairs, their periphery, analog layers, and the
pulse optimizer.

* :mod:`.array` — :class:`Crossbar` (the array, its reads and writes) and its :class:`Counters`;
* :mod:`.periphery` — converters and :func:`calibrate_adc`;
* :mod:`.layers` — :class:`AnalogLinear`, :class:`AnalogConv2d` (``torch.nn`` modules whose
  weights live on crossbars and follow ``module.to(...)``);
* :mod:`.optim` — :class:`PulseSGD`.
"""

from ..devices import PulseError, check_pulses
from .array import Counters, Crossbar, ProgramResult
from .layers import AnalogConv2d, AnalogLinear, analog_layers
from .optim import PulseSGD
from .periphery import calibrate_adc

__all__ = ["Counters", "Crossbar", "ProgramResult", "AnalogLinear", "AnalogConv2d", "PulseSGD", "PulseError",
           "analog_layers", "calibrate_adc", "check_pulses"]
