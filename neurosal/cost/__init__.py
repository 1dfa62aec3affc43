"""The hardware cost model: energy, latency and area from the events a run really made.

* :mod:`.cards` — cost cards of the periphery and the co-processor, device energies;
* :mod:`.ledger` — :class:`Ledger` (events per costed unit and phase), :func:`phase`;
* :mod:`.pricing` — :func:`cost_report`: a ledger priced by the cards (:class:`CostReport`), a
  rule's :class:`Schedule`;
* :mod:`.plots` — :func:`plot_breakdown`.

The cost model prices a ledger; it runs nothing. What runs a chip to fill a ledger (a
measurement of an inference and a training step) is :mod:`neurosal.experiments.costing`.

May import: :mod:`neurosal.crossbar` (counters), :mod:`neurosal.cards`, :mod:`neurosal.files`.
"""

from .cards import (ADCCost, ArrayCost, CoprocessorCost, DACCost, DigitalCost, NeuronCost, PeripheryCost,
                    device_energies, list_coprocessors, list_periphery, load_coprocessor, load_periphery)
from .ledger import PHASES, Ledger, off_chip, phase
from .plots import plot_breakdown
from .pricing import ANALOG, COMPONENTS, DIGITAL, CostReport, Schedule, cost_report

__all__ = ["PHASES", "COMPONENTS", "ANALOG", "DIGITAL", "Ledger", "phase", "off_chip", "PeripheryCost", "CoprocessorCost",
           "ArrayCost", "ADCCost", "DACCost", "NeuronCost", "DigitalCost", "load_periphery", "load_coprocessor",
           "device_energies", "CostReport", "cost_report", "Schedule", "list_periphery", "list_coprocessors",
           "plot_breakdown"]
