r"""The one definition of every training option (:class:`TrainConfig`) and of a training run's
result (:class:`TrainResult`).

Everything else is derived from :class:`TrainConfig`'s fields and their metadata:

* the options of ``neurosal train`` (flags, types, ranges, choices, defaults and help;
  :mod:`neurosal.cli.train`), and so ``--print-config`` / ``--config FILE.toml``;
* the keys a study may set (:data:`STUDY_OPTIONS`, :mod:`neurosal.studies.runs`);
* a checkpoint's training configuration (:meth:`TrainConfig.identity`: what a resumed run must
  match; :data:`RESUME_FREE` may change on resume);
* the named errors for values out of range (:meth:`TrainConfig.check`), the same on the
  command line and from Python;
* which options belong to which rule: a rule declares the options it takes
  (:attr:`neurosal.learning.Rule.options`), and an option left away from its default for a rule
  that does not take it is refused.

May import: :mod:`neurosal.learning` (rule names and their options), :mod:`neurosal.networks`
(codings), :mod:`neurosal.datasets` (names).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

from ..datasets import DATASETS
from ..learning import rule_class, rule_names
from ..networks import CODINGS

__all__ = ["TrainConfig", "TrainResult", "Option", "options", "STUDY_OPTIONS", "RESUME_FREE", "parse_attach"]

_SEED_MAX = 2**32 - 1


def option(default: Any = dataclasses.MISSING, *, help: str = "", lo: Optional[float] = None,  # noqa: A002
           hi: Optional[float] = None, lo_open: bool = False, hi_open: bool = False, choices=None,
           metavar: Optional[str] = None, unset: str = "", identity: bool = True, study: bool = True,
           cli: bool = True, resume_free: bool = False, flag: Optional[str] = None):
    """A :class:`TrainConfig` field with what the command line, studies and checks need:
    ``lo``/``hi`` (``*_open``: strict) and ``choices`` bound the value (``choices`` may be a
    function, called when the option is first needed); ``unset`` says what leaving an optional
    value out means; ``identity``: part of the run's configuration kept in a checkpoint (a
    resumed run must match it, unless ``resume_free``); ``study``: a study may set it; ``cli``:
    ``neurosal train`` has a flag for it (``flag``, default ``--name-with-dashes``)."""
    meta = dict(help=help, lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open, choices=choices, metavar=metavar,
                unset=unset, identity=identity, study=study, cli=cli, resume_free=resume_free, flag=flag)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run of ``neurosal train`` (and of a study's trial).

    ``network`` and ``device`` are recipe / card names, paths to TOML files, or card objects.
    The fields up to ``attention_lr`` are the run's identity (kept in its checkpoint); the rest
    say where the data, the outputs and the computation are.
    """

    # ---- the run's identity (a checkpoint keeps these; a resumed run must match them)
    network: Any = option(None, help="network recipe (name or path)", metavar="NAME|PATH")
    device: Any = option(None, help="device card of the crossbars (name or path)", metavar="NAME|PATH")
    rule: str = option("hybrid", help="on-chip learning rule", choices=rule_names)
    coding: str = option("rate", help="coding scheme", choices=CODINGS)
    dataset: str = option("digits", help="dataset", choices=DATASETS)
    seed: int = option(0, help="seeds the chip, the data order and every noise stream", lo=0, hi=_SEED_MAX)
    lr: float = option(0.1, help="learning rate", lo=0, lo_open=True)
    batch: int = option(8, help="samples per training step", lo=1)
    steps: Optional[int] = option(None, help="time steps of the spike codings (default: the recipe's)", lo=1,
                                  unset="or leave it out for the recipe's")
    rounding: str = option("stochastic", help="gradient -> pulses rounding of bp and dfa",
                           choices=("stochastic", "round"))
    update: str = option("rounded", help="how bp and the tiki-taka family write an update: "
                         "'rounded' (a digital gradient rounded to pulse counts) or 'pulse-train' (stochastic pulse "
                         "trains of length --bl that coincide in the array; fully connected layers)",
                         choices=("rounded", "pulse-train"))
    bl: int = option(31, help="pulse-train length BL of --update pulse-train", lo=1, hi=4096)
    transfer_rows: int = option(8, help="tiki-taka family: rows of the fast array A read (and transferred to C) "
                                "per training step", lo=1, metavar="K")
    transfer_lr: float = option(0.1, help="tiki-taka family: transfer rate, the share of each reading of A "
                                "added to the digital buffer H (in pulses of C)", lo=0, lo_open=True)
    chop_prob: Optional[float] = option(None, help="c-ttv2: chance that a row's chopper flips after its read; agad: "
                                        "1 / its period in reads", lo=0, lo_open=True, hi=1,
                                        unset="or leave it out for the rule's: c-ttv2 0.1, agad 0.5")
    limit_train: Optional[int] = option(None, help="use only the first N training samples", lo=1,
                                        unset="or leave it out for all")
    limit_test: Optional[int] = option(None, help="use only the first N test samples", lo=1,
                                       unset="or leave it out for all")
    array: str = option("all", help="layers on crossbars: all, or only the first (the rest in software)",
                        choices=("all", "first"))
    readback: int = option(0, help="hybrid: every K steps read the arrays (counted verify reads) to re-anchor the "
                           "controller's estimates; 0 (default): pure open loop", lo=0, metavar="K")
    crop: Optional[int] = option(None, help="input transform: the central NxN pixels", lo=1, metavar="N")
    binarize: Optional[float] = option(None, help="input transform: pixels > T -> 1, else 0", lo=0, hi=1,
                                       hi_open=True, metavar="T")
    periphery: Any = option("isaac-32nm", help="periphery cost card (name or path)", metavar="NAME|PATH",
                            resume_free=True)
    coprocessor: Any = option("puma-vfu-32nm", help="co-processor cost card (name or path)", metavar="NAME|PATH",
                              resume_free=True)
    attach: Optional[str] = option(None, help="SAnet: stages with an attention block, e.g. 1,3 (default: the "
                                   "recipe's)", metavar="STAGES|none")
    attach_epochs: Optional[int] = option(None, help="SAnet: attention for the first K epochs, then detached (the "
                                          "backbone trains on alone)", lo=0, metavar="K")
    attach_gate: Optional[float] = option(None, help="SAnet: keep a block only where the fresh chip's stage output "
                                          "deviates from the ideal-device value by more than T (relative)", lo=0,
                                          metavar="T")
    attention_optimizer: str = option("rule", help="SAnet: how the (digital) attention blocks learn: 'rule' (with the "
                                      "backbone's digital parameters, by the rule's SGD at --lr) or by a digital "
                                      "optimizer of their own, 'sgd' or 'adam', at --attention-lr",
                                      choices=("rule", "sgd", "adam"))
    attention_lr: Optional[float] = option(None, help="learning rate of --attention-optimizer sgd / adam", lo=0,
                                           lo_open=True, unset="or leave it out: --lr for sgd, 1e-3 for adam")
    # ---- how long, and where things are
    epochs: int = option(1, help="training epochs", lo=1, identity=False)
    data_dir: Optional[str] = option(None, help="folder with the dataset files (default data/<dataset>)",
                                     identity=False)
    out: Optional[str] = option(None, help="checkpoint file (chip + network + rule state), written at the end of "
                                "every epoch", identity=False, study=False)
    overwrite: bool = option(False, help="replace an existing --out file", identity=False, study=False)
    resume: Optional[str] = option(None, help="continue the run that wrote CKPT up to --epochs (options left out "
                                   "take its values; --out defaults to CKPT)", metavar="CKPT", identity=False,
                                   study=False)
    log: Optional[str] = option(None, help="append each epoch's loss, accuracy, pulses, energy and seconds as it "
                                "ends", metavar="FILE.csv|FILE.jsonl", identity=False, study=False)
    tensorboard: Optional[str] = option(None, help="the same per-epoch figures as TensorBoard scalars (needs the "
                                        "tensorboard package)", metavar="DIR", identity=False, study=False)
    accelerator: Any = option("auto", help="hardware that runs the simulation (auto: a GPU when there is one); "
                              "--device is the memory device on the chip", metavar="auto|cpu|cuda|cuda:N",
                              identity=False, study=False)

    # -- derived views ---------------------------------------------------------------------------
    def identity(self) -> dict:
        """The run's configuration as a checkpoint keeps it (card objects by name, ``attach`` as a
        list of stages): what a resumed run must match."""
        out = {}
        for f in dataclasses.fields(self):
            if f.metadata["identity"]:
                v = getattr(self, f.name)
                out[f.name] = parse_attach(v) if f.name == "attach" else _label(v)
        return out

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def check(self) -> None:
        """Named errors for options out of range, before any work (:class:`ValueError`: the flag,
        the value and what is allowed)."""
        for o in options():
            v = getattr(self, o.name)
            if o.name in ("network", "device"):
                if v is None:
                    raise ValueError(f"train: {o.flag} is required (a name, a path to a .toml file, or a card)")
                continue
            if o.choices is not None:
                if v not in o.choices:
                    raise ValueError(f"unknown {o.name} {v!r}; allowed: {', '.join(map(str, o.choices))}")
            elif o.kind in (int, float) and not (v is None and o.optional):
                if not o.accepts(v):
                    raise ValueError(f"{o.flag} {v}: not allowed; allowed: {o.allowed()}")
        parse_attach(self.attach)
        taken = rule_class(self.rule).options
        for o in options():
            owners = [r for r in rule_names() if o.name in rule_class(r).options]
            if owners and o.name not in taken and getattr(self, o.name) != o.default:
                raise ValueError(f"{o.name} is an option of the {', '.join(owners)} rule{'s' if len(owners) > 1 else ''}"
                                 f", not of {self.rule!r}")


def _label(v):
    """A card given as an object is kept by its name."""
    if v is None or isinstance(v, (str, int, float, bool, Path)):
        return str(v) if isinstance(v, Path) else v
    return getattr(v, "name", str(v))


def parse_attach(value) -> Optional[list]:
    """``attach`` as a list of stages (``None``: the recipe's): from ``"1,3"``, ``"none"``
    or a list."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            stages = [] if text in ("none", "") else [int(v) for v in text.split(",")]
        except ValueError:
            raise ValueError(f"--attach {text!r}: not allowed; allowed: stages among 1, 2, 3 as '1,3', or 'none'") \
                from None
    else:
        stages = [int(v) for v in value]
    bad = [v for v in stages if v not in (1, 2, 3)]
    if bad:
        raise ValueError(f"--attach: stages {bad} not allowed; allowed: 1, 2, 3 (or none)")
    return stages


@dataclass(frozen=True)
class Option:
    """One :class:`TrainConfig` field as the command line and the checks see it."""

    name: str
    flag: str
    kind: type                    # int, float, str, bool, or object (a name, path or card)
    optional: bool
    default: Any
    help: str
    choices: Optional[tuple]
    metavar: Optional[str]
    lo: Optional[float]
    hi: Optional[float]
    lo_open: bool
    hi_open: bool
    unset: str
    identity: bool
    study: bool
    cli: bool
    resume_free: bool

    def accepts(self, v) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        if self.kind is int and not isinstance(v, int):
            return False
        if isinstance(v, float) and not math.isfinite(v):
            return False
        lo, hi = self.lo, self.hi
        return not ((lo is not None and (v < lo or (self.lo_open and v == lo)))
                    or (hi is not None and (v > hi or (self.hi_open and v == hi))))

    def allowed(self) -> str:
        """What is allowed, in words (the same wording as the command line's)."""
        lo, hi = _num(self.lo), _num(self.hi)
        if self.kind is int:
            text = f"an integer >= {lo}" if hi is None else f"an integer from {lo} to {hi}"
        elif hi is None:
            text = f"a finite number {'>' if self.lo_open else '>='} {lo}"
        else:
            text = f"a finite number in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"
        return f"{text} ({self.unset})" if self.unset else text


def _num(v) -> Optional[str]:
    return None if v is None else (str(int(v)) if float(v).is_integer() else f"{v:g}")


def _kind(tp) -> tuple:
    optional = False
    if get_origin(tp) is Union:
        args = [a for a in get_args(tp) if a is not type(None)]
        optional = len(args) < len(get_args(tp))
        tp = args[0] if len(args) == 1 else object
    return (tp if tp in (int, float, str, bool) else object), optional


_OPTIONS: Optional[list] = None


def options() -> list[Option]:
    """Every :class:`TrainConfig` field as an :class:`Option`, in field order."""
    global _OPTIONS
    if _OPTIONS is None:
        hints = get_type_hints(TrainConfig)
        out = []
        for f in dataclasses.fields(TrainConfig):
            m = f.metadata
            kind, optional = _kind(hints[f.name])
            choices = m["choices"]() if callable(m["choices"]) else m["choices"]
            out.append(Option(name=f.name, flag=m["flag"] or "--" + f.name.replace("_", "-"), kind=kind,
                              optional=optional or f.default is None, default=f.default, help=m["help"],
                              choices=tuple(choices) if choices is not None else None, metavar=m["metavar"],
                              lo=m["lo"], hi=m["hi"], lo_open=m["lo_open"], hi_open=m["hi_open"], unset=m["unset"],
                              identity=m["identity"], study=m["study"], cli=m["cli"],
                              resume_free=m["resume_free"]))
        _OPTIONS = out
    return _OPTIONS


def options_by_name() -> dict:
    return {o.name: o for o in options()}


def _study_options() -> dict:
    return {o.name: (o.kind if o.kind in (int, float, bool) else str) for o in options() if o.study}


#: the options a study may set, and the Python type of their values
STUDY_OPTIONS = _study_options()
#: options a resumed run may change (where the cost cards are)
RESUME_FREE = tuple(o.name for o in options() if o.resume_free)


@dataclass
class TrainResult(Mapping):
    """What a training run produced: accuracies, the chip's events and pulses, and the energy of
    the training and of the final test run from the cost ledger.

    It reads like the JSON object ``neurosal train --json`` prints (``result["test_accuracy"]``,
    :meth:`as_dict`); optional entries (attention, write-and-verify programming) are present only
    where they apply."""

    network: str
    device: str
    rule: str
    coding: str
    dataset: str
    array: str
    epochs: int
    seed: int
    lr: float
    batch: int
    steps: int
    rounding: str
    test_accuracy: float
    history: list
    seconds: float
    accelerator: str
    threads: int
    pulses: int
    verify_reads: int
    clipped_cells: int
    readback: int
    layers: dict                       # analog layer -> its crossbar's counters
    energy_j: float = 0.0              # training energy
    cost: dict = dataclasses.field(default_factory=dict)
    digital_share: dict = dataclasses.field(default_factory=dict)
    attention: Optional[dict] = None
    program_pulses: Optional[int] = None
    converged: Optional[list] = None
    software_accuracy: Optional[float] = None
    firing: Optional[dict] = None      # spikes per neuron and step of each population in the final test run
    gains: Optional[dict] = None       # the data-driven gain calibration (recipe spike_rate)
    warnings: Optional[list] = None    # silent or saturated populations

    _OPTIONAL = ("attention", "program_pulses", "converged", "software_accuracy", "firing", "gains", "warnings")

    def as_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for k in self._OPTIONAL:
            if d[k] is None:
                del d[k]
        return d

    def __getitem__(self, key):
        return self.as_dict()[key]

    def __iter__(self):
        return iter(self.as_dict())

    def __len__(self) -> int:
        return len(self.as_dict())
