"""Networks on the chip: recipes, the builders that turn them into networks on crossbars, the
network models, and checkpoint files.

* :mod:`.recipes` — :class:`NetworkCard` (``networks/*.toml``), :func:`load_network`;
* :mod:`.builders` — :func:`build` (one :class:`~.builders.Builder` per recipe kind, which says
  what it supports), :func:`mlp`, :func:`sanet_resnet`, :func:`vgg`;
* :mod:`.sanet` — SAnet: an analog ResNet backbone with digital attention on the co-processor;
* :mod:`.charge` — charge-domain MLP and VGG (Sakemi et al.), trained through DSTD;
* :mod:`.checkpoint` — :func:`save_checkpoint`, :func:`load_checkpoint`.

Layer chains (:class:`~neurosal.engine.Network`) live in the engine, which runs them.

May import: :mod:`neurosal.engine`, :mod:`neurosal.crossbar`, :mod:`neurosal.neurons`,
:mod:`neurosal.coprocessor`, :mod:`neurosal.cards` and the infrastructure.
"""

from .builders import BUILDERS, Builder, build, builder_for, mlp, sanet_resnet, vgg
from .charge import ChargeMLP, ChargeVGG
from .checkpoint import load_checkpoint, save_checkpoint
from .recipes import CODINGS, KINDS, ChargeCard, LIFCard, NetworkCard, PeripheryCard, list_networks, load_network, \
    recipe_for
from .sanet import BasicBlock, FrozenBatchNorm2d, SAnet

__all__ = ["NetworkCard", "LIFCard", "ChargeCard", "PeripheryCard", "KINDS", "CODINGS", "load_network",
           "list_networks", "recipe_for", "build", "builder_for", "Builder", "BUILDERS", "mlp", "vgg", "sanet_resnet",
           "save_checkpoint", "load_checkpoint", "ChargeMLP", "ChargeVGG", "SAnet", "BasicBlock", "FrozenBatchNorm2d"]
