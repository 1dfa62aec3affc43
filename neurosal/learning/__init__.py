r"""On-chip learning rules: one module per rule, each a :class:`~.rule.Rule` registered by name.
Every rule ends in pulses applied by the device model; weights are never set directly (except
by ``verify``, which pays for it in pulses and verify reads).

* :mod:`.rule` — the protocol (what a rule declares, its lifecycle) and the registry;
* :mod:`.bp` — ``bp``: backprop through the arrays, pulses by rounding (:class:`~neurosal.crossbar.PulseSGD`);
* :mod:`.dfa` — ``dfa``: direct feedback alignment, all layers at once;
* :mod:`.hybrid` — ``hybrid`` (Kwon et al.): off-array updates, open-loop pulses, no verify reads;
  its write controller in :mod:`.controller`;
* :mod:`.verify` — ``verify``: software training, then write-and-verify programming;
* :mod:`.offchip` — ``offchip``: hardware-aware training of the chip's model off the chip
  (Adam through the arrays' read path), then write-and-verify programming, any layer type.

May import: :mod:`neurosal.engine`, :mod:`neurosal.crossbar`, :mod:`neurosal.cost` (phases and
schedules), :mod:`neurosal.accel`. Nothing here runs an experiment.
"""

from .bp import BP
from .controller import HybridController, write_all
from .dfa import DFA
from .hybrid import Hybrid
from .offchip import OffChip
from .rule import Rule, backprop_step, register, rule_class, rule_names
from .verify import Verify

__all__ = ["RULES", "Rule", "BP", "DFA", "Hybrid", "HybridController", "OffChip", "Verify", "make_rule", "rule_class",
           "rule_names", "register", "write_all", "backprop_step"]

#: the registered rules, in listing order
RULES = rule_names()


def make_rule(name: str, net, *, lr: float, seed: int = 0, **options):
    """The rule ``name`` for ``net``: ``lr``, ``seed`` and the options the rule takes (its
    ``options``; the others are ignored here — :class:`~neurosal.training.TrainConfig` refuses
    an option that does not apply to the chosen rule)."""
    cls = rule_class(name)
    return cls(net, lr=lr, seed=seed, **{k: v for k, v in options.items() if k in cls.options})
