r"""Analog synapse devices: model cards, response families and nonidealities.

The room of the device physics. A *card* (:mod:`.card`, ``neurosal/cards/devices/*.toml``) says what a
device is; its *response family* (:mod:`.family`, one module per family in
:mod:`.families`: ``linear``, ``soft-bounds``, ``exponential``, ``power``, ``table``) says how
a pulse moves its conductance; :mod:`.state` draws a fabricated array (device-to-device
variation, stuck-at faults); :mod:`.model` is the :class:`Device` that applies pulses
(cycle-to-cycle noise), reads (read noise, drift) and plans open-loop writes on the nominal curve.

Devices know nothing of arrays, networks or learning. May import: :mod:`neurosal.cards`,
:mod:`neurosal.accel`.
"""

from .card import MODELS, DeviceCard, Drift, Energy, Faults, Noise, Pulse, Variation, list_devices, load_device
from .families.exponential import a_to_nl, nl_to_a
from .family import ResponseFamily, family_class, family_names, register
from .model import MAX_CURVE_PULSES, Device, PulseError, check_pulses
from .state import DeviceState

__all__ = [
    "PulseError", "check_pulses", "MODELS", "DeviceCard", "Noise", "Variation", "Faults", "Drift", "Pulse", "Energy",
    "Device", "DeviceState", "load_device", "list_devices", "nl_to_a", "a_to_nl", "ResponseFamily", "register",
    "family_class", "family_names", "MAX_CURVE_PULSES",
]
