"""What every network on the chip says about itself: the protocol the engine, the cost model,
the learning rules and the training loop ask, instead of recognizing networks by their class.

A network on the chip is an ``nn.Module`` that also offers :class:`ChipNetwork`'s methods
(inherit it for the defaults of a module that computes logits directly):

* :meth:`~ChipNetwork.run` — one inference or training forward pass on the chip for a coding,
  returning at least ``.scores``; :meth:`~ChipNetwork.loss_scores` — what the loss is taken on;
* :meth:`~ChipNetwork.analog_units` — its analog layers by name (the crossbars, in a fixed order:
  checkpoints, counters and the cost ledger follow it);
* :meth:`~ChipNetwork.cost_units` — the :class:`CostUnit` s whose events the cost ledger counts
  (an analog layer's crossbar and neuron work, an attention block's co-processor work);
* ``structure`` — ``'chain'``: a chain of :class:`~neurosal.engine.network.Layer` s
  (``net.layers``) run by the timestep simulator; ``'module'``: a torch module that computes
  its logits (a graph of convolutions, residual adds, attention);
* :meth:`~ChipNetwork.check_feedback` / ``feedback_taps()`` — whether layer-local direct
  feedback alignment reaches its layers (a module whose layer outputs can be captured);
* ``stage_count`` — residual stages whose outputs can be captured (Grad-CAM, attention gates);
* the attention interface (:meth:`~ChipNetwork.attention_blocks`, :meth:`~ChipNetwork.attention_state`,
  :meth:`~ChipNetwork.attach`, :meth:`~ChipNetwork.detach`): no-ops for networks without digital
  attention.

May import: :mod:`neurosal.crossbar` (to find analog layers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Optional

import torch

from ..crossbar import analog_layers

__all__ = ["ChipNetwork", "CostUnit", "Scores", "Component", "ENCODER_OF"]

#: the input encoder of each coding (what the engine feeds a network by default)
ENCODER_OF = {"rate": "direct", "spike": "rate", "latency": "latency"}


@dataclass(frozen=True)
class Component:
    """A component of a network that a probe can name: what it records (``variables``) and
    its neurons' layout (``shape``; node ids count over the flattened shape)."""

    variables: tuple
    shape: tuple

    @property
    def neurons(self) -> int:
        n = 1
        for v in self.shape:
            n *= int(v)
        return n


@dataclass
class CostUnit:
    """One costed unit of a network: an analog layer (``crossbar``) or an attention block."""

    name: str
    kind: str                              # 'layer' | 'attention'
    crossbar: object = None                # Crossbar of an analog layer
    neurons: Optional[Callable] = None     # () -> (neuron updates, spikes), cumulative
    block: Optional[Callable] = None       # () -> CoCounters of an attention block


@dataclass
class Scores:
    """The outcome of a network that computes its logits directly."""

    scores: torch.Tensor


class ChipNetwork:
    """The protocol of a network on the chip, with the defaults of a module whose ``forward``
    returns logits (SAnet, the charge-domain models)."""

    #: 'chain' (a chain of Layers run by the timestep simulator) or 'module' (logits from forward)
    structure: ClassVar[str] = "module"
    #: residual stages whose outputs can be captured (0: none)
    stage_count: ClassVar[int] = 0
    #: the digital co-processor the network's attention runs on (None: no digital attention)
    coprocessor = None
    #: the kind of its attention blocks ('se', 'cbam'; None: none)
    attention_kind: Optional[str] = None
    #: per analog layer (module name): [neuron updates, spikes], cumulative; None where the
    #: network counts its neurons otherwise
    neuron_counts: Optional[dict] = None

    # -- running ------------------------------------------------------------------------
    def run(self, x: torch.Tensor, *, coding: str, steps: int, seed: int = 0):
        """One forward pass of ``x`` (``[batch, features]`` in [0, 1]) on the chip."""
        return Scores(scores=self(x))

    def loss_scores(self, result, coding: str) -> torch.Tensor:
        """The scores the training loss is taken on."""
        return result.scores

    # -- in the engine ------------------------------------------------------------------------
    #: the network records its own input (charge-domain: the input spike times)
    records_input: ClassVar[bool] = False

    def components(self) -> dict:
        """``{name: Component}``: what a probe can name (neuron populations, attention blocks,
        readouts), in the order of the graph."""
        return {}

    def engine_input(self, coding: str, steps: int):
        """``(encoder, engine steps)`` the engine feeds for ``coding`` (see
        :func:`~neurosal.engine.encoder_for`)."""
        return ENCODER_OF[coding], (1 if coding == "rate" else steps)

    def step(self, run, h, spikes: bool) -> None:
        """One chunk of the network's graph in the engine (see :class:`~neurosal.engine.Run`)."""
        raise NotImplementedError(f"{type(self).__name__} does not describe its graph to the engine")

    def finish(self, run):
        """The run's result (``.scores`` at least) from what :meth:`step` accumulated."""
        raise NotImplementedError(f"{type(self).__name__} does not describe its graph to the engine")

    # -- what it is made of -----------------------------------------------------------------
    def analog_units(self) -> list:
        """``(name, analog layer)`` of every crossbar layer, in module order."""
        analog = {id(m) for m in analog_layers(self)}
        return [(name, m) for name, m in self.named_modules() if id(m) in analog]

    def cost_units(self) -> list:
        """The units whose events the cost ledger counts: every analog layer (its crossbar and,
        from ``neuron_counts``, its neurons), then the attention blocks."""
        counts = self.neuron_counts
        units = [CostUnit(name, "layer", mod.crossbar,
                          neurons=(lambda name=name: tuple(counts.get(name, (0, 0)))) if counts is not None else None)
                 for name, mod in self.analog_units()]
        cp = self.coprocessor
        if cp is not None:
            for key, blk in self.attention_blocks().items():
                units.append(CostUnit(f"attn.{key}", "attention", block=lambda tag=blk.tag, cp=cp: cp.blocks.get(tag)))
        return units

    # -- digital attention (none by default) --------------------------------------------------
    def attention_blocks(self) -> dict:
        """``{stage: block}`` of the attention blocks the network has (attached or not)."""
        return {}

    def attention_state(self) -> Optional[list]:
        """The stages whose blocks are attached (sorted), or None for a network without attention."""
        return None

    def attach(self, stages=None) -> None:
        """Switch attention on at ``stages`` (default: every block)."""

    def detach(self) -> None:
        """Run without attention: no digital work."""

    def stage_outputs(self):
        """A context manager whose dict receives each residual stage's output by stage number
        during the passes inside it (networks with ``stage_count > 0``)."""
        raise ValueError(f"{type(self).__name__} has no residual stages to capture")

    def check_feedback(self) -> None:
        """Raise a named error unless layer-local direct feedback reaches every layer
        (``feedback = 'local'`` networks, which also offer ``feedback_taps()``)."""
        raise ValueError("dfa is implemented for rate coding (--coding rate) of MLPs and SAnet/ResNet")
