r"""On-chip learning rules: one module per rule, each a :class:`~.rule.Rule` registered by name.
Every rule ends in pulses applied by the device model; weights are never set directly (except
by ``verify``, which pays for it in pulses and verify reads).

* :mod:`.rule` — the protocol (what a rule declares, its lifecycle) and the registry;
* :mod:`.bp` — ``bp``: backprop through the arrays, pulses by rounding (:class:`~neurosal.crossbar.PulseSGD`);
* :mod:`.dfa` — ``dfa``: direct feedback alignment, all layers at once;
* :mod:`.hybrid` — ``hybrid`` (Kwon et al.): off-array updates, open-loop pulses, no verify reads;
  its write controller in :mod:`.controller`;
* :mod:`.verify` — ``verify``: software training, then write-and-verify programming;
* :mod:`.mixed_precision` — ``mixed-precision`` (Nandakumar et al.): a digital accumulator per weight,
  a pulse per whole device step;
* :mod:`.tiki_taka` — ``ttv2``, ``c-ttv2``, ``agad`` (Gokmen; Rasch et al.): a fast array takes the
  updates, periodic reads transfer them to the weights' array through a digital buffer;
* :mod:`.offchip` — ``offchip``: hardware-aware training of the chip's model off the chip
  (Adam through the arrays' read path), then write-and-verify programming, any layer type.

May import: :mod:`neurosal.engine`, :mod:`neurosal.crossbar`, :mod:`neurosal.cost` (phases and
schedules), :mod:`neurosal.accel`. Nothing here runs an experiment.
"""

from .bp import BP
from .controller import HybridController, write_all
from .dfa import DFA
from .hybrid import Hybrid
from .mixed_precision import MixedPrecision
from .offchip import OffChip
from .tiki_taka import AGAD, ChoppedTTv2, TikiTaka, TTv2
from .rule import Rule, backprop_step, register, rule_class, rule_names, rule_parameters
from .verify import Verify

__all__ = ["RULES", "Rule", "BP", "DFA", "Hybrid", "HybridController", "MixedPrecision", "OffChip", "TikiTaka",
           "TTv2", "ChoppedTTv2", "AGAD", "Verify", "make_rule", "rule_class",
           "rule_names", "register", "write_all", "backprop_step", "rule_parameters"]

#: the registered rules, in listing order
RULES = rule_names()


def make_rule(name: str, net, *, lr: float, seed: int = 0, **options):
    """The rule ``name`` for ``net``: ``lr``, ``seed`` and the options the rule takes (its
    ``options``; the others are ignored here — :class:`~neurosal.training.TrainConfig` refuses
    an option that does not apply to the chosen rule)."""
    cls = rule_class(name)
    return cls(net, lr=lr, seed=seed, **{k: v for k, v in options.items() if k in cls.options})
