"""Neuron layers: what a crossbar's output drives.

* :mod:`.state` — :class:`NeuronState` and the protocol every neuron layer follows (what it
  consumes, whether it spikes, one lifecycle);
* :mod:`.charge` — the charge-domain integrate-and-fire neuron with reversal potentials
  (Sakemi et al.): exact event-driven layers, DSTD layers, :class:`ChargeNeurons` on a time grid;
* :mod:`.lif` — LIF through norse with surrogate gradients by name (:class:`LIFNeurons`);
* :mod:`.rate` — rate neurons, the ``T = 1`` analog limit (:class:`RateNeurons`).

May import: norse; nothing of neurosal.
"""

from .charge import (ChargeNeurons, ChargeParameters, beta_of, charge_step, charge_ttfs_step, dstd_rc_membrane,
                     dstd_rc_spike_layer, dstd_ttfs_layer, dstd_walk, rc_membrane_exact, rc_spike_layer, ttfs_layer)
from .lif import SURROGATES, LIFNeurons, LIFParameters, SuperSpike, lif_step, spike_fn
from .rate import RateNeurons
from .state import NeuronState

__all__ = ["beta_of", "charge_step", "ttfs_layer", "rc_spike_layer", "dstd_ttfs_layer", "dstd_rc_spike_layer",
           "SURROGATES", "spike_fn", "LIFParameters", "lif_step", "LIFNeurons", "RateNeurons", "ChargeNeurons",
           "ChargeParameters", "charge_ttfs_step", "NeuronState", "dstd_rc_membrane", "dstd_walk", "rc_membrane_exact", "SuperSpike"]
