"""The training driver: a :class:`~neurosal.training.TrainConfig` run on the simulated chip,
epoch by epoch, with its cost ledger, checkpoints that resume bit for bit, and logs.

May import: everything below it (:mod:`neurosal.learning`, :mod:`neurosal.networks`,
:mod:`neurosal.engine`, :mod:`neurosal.cost`, :mod:`neurosal.datasets`, :mod:`neurosal.devices`,
:mod:`neurosal.files`, :mod:`neurosal.progress`); TensorBoard only when asked for.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import torch

from ..cost import COMPONENTS, PHASES, Ledger, cost_report
from ..datasets import load
from ..devices import load_device
from ..engine import (activity_warnings, calibrate, calibration_batch, device_of, evaluate, firing_rates, initialize_gains,
                      population_counts)
from ..files import Owner, check_output, keep, unkeep
from ..learning import make_rule, rule_class
from ..networks import build, builder_for, load_checkpoint, load_network, save_checkpoint
from ..progress import bar as progress_bar
from .config import RESUME_FREE, TrainConfig, TrainResult
from .log import log_epoch
from .strategies import attention_deviation

__all__ = ["train", "resume_config"]


def train(config=None, device=None, /, *, progress: bool = True, return_net: bool = False, **options):
    """Train a network on the simulated chip.

    ``train(TrainConfig(...))``, or ``train(network, device, **options)`` with the fields of
    :class:`~neurosal.training.TrainConfig` as keywords (``train(config, **changes)`` replaces
    fields of a config). Returns a :class:`~neurosal.training.TrainResult`: accuracies, pulse and
    event counts, and the energy of the training and of the final test run from the cost ledger
    (with the ``periphery`` and ``coprocessor`` cost cards); with ``return_net``, ``(result,
    network, data)``.

    The data go to the accelerator once, the chip is drawn on the CPU and moved. ``out``: the
    checkpoint, checked and owned before any work, written (atomically) at the end of every
    epoch with everything a resumed run needs. ``resume``: a checkpoint written by an unfinished
    (or shorter) run with the same configuration (:func:`resume_config`); training continues
    from its last epoch up to ``epochs``, on the same chip, with the same random streams and
    data order, and ends exactly where an uninterrupted run ends.

    Attention strategies (networks whose builder supports them: SAnet / ResNet; see
    :func:`~neurosal.training.strategies.attention_deviation`): ``attach`` the stages that get a
    block (overrides the recipe; ``'none'``: none); ``attach_epochs = K``: the blocks train with
    the backbone for the first ``K`` epochs, then are detached and the backbone trains on alone;
    ``attach_gate = t``: keep a block only where a calibration read of the fresh chip shows its
    stage's output deviating from the ideal-device value by more than ``t``. The result says
    which blocks inference uses (``attached``) and the digital share of the energy.

    ``log``: a ``.csv`` or ``.jsonl`` file that gets one row per epoch as it ends; a resumed run
    appends to it. ``tensorboard``: a folder that gets the same figures as TensorBoard scalars.
    """
    if isinstance(config, TrainConfig):
        if device is not None:
            raise TypeError("train(config): the device is a field of the config")
        cfg = config.replace(**options) if options else config
    else:
        cfg = TrainConfig(network=config, device=device, **options)
    cfg.check()
    ident = cfg.identity()
    state = None
    if cfg.resume is not None:
        state = resume_config(cfg.resume)
        saved = state["config"]
        diff = [k for k in ident if k in saved and k not in RESUME_FREE and saved[k] != ident[k]]
        if diff:
            raise ValueError(f"{cfg.resume}: the run to resume had " + ", ".join(
                f"{k} = {saved[k]!r}" for k in diff) + "; this one asks for " + ", ".join(
                f"{k} = {ident[k]!r}" for k in diff) + " (leave them out to take the checkpoint's)")
        if state["epoch"] >= cfg.epochs:
            raise ValueError(f"{cfg.resume}: the run already finished {state['epoch']} epoch(s); "
                             f"pass --epochs N with N > {state['epoch']} to train further")
    owner = None
    writer = None
    log = cfg.log
    if cfg.tensorboard is not None:
        try:
            from torch.utils.tensorboard import SummaryWriter          # optional: the tensorboard package
        except ImportError:
            raise ValueError("--tensorboard needs the tensorboard package (pip install tensorboard); "
                             "--log FILE.csv writes the same figures without it") from None
        writer = SummaryWriter(log_dir=str(cfg.tensorboard))
    if log is not None:
        if Path(log).suffix.lower() not in (".csv", ".jsonl"):
            raise ValueError(f"--log {log}: not allowed; allowed: a .csv or .jsonl file")
        log = check_output(log, overwrite=cfg.overwrite or cfg.resume is not None, what="--log")
        if cfg.resume is None and log.exists():
            log.unlink()                         # --overwrite: a new run starts a new log
    out = cfg.out
    if out is not None:
        same = cfg.resume is not None and Path(out).resolve() == Path(cfg.resume).resolve()
        out = check_output(out, overwrite=cfg.overwrite or same)
        owner = Owner(out).acquire()
    try:
        return _train(cfg, ident, out=out, progress=progress, return_net=return_net, state=state, log=log,
                      writer=writer)
    finally:
        if owner is not None:
            owner.release()
        if writer is not None:
            writer.close()


def attention_optimizer(net, cfg: TrainConfig):
    """The attention blocks' own digital optimizer (``cfg.attention_optimizer`` 'sgd' or 'adam',
    at ``cfg.attention_lr``: default ``cfg.lr`` for SGD, 1e-3 for Adam), or None for 'rule'
    (the blocks learn with the rule's other digital parameters). Marks the blocks' parameters
    as ``net.separately_trained``, so that the rule made after it leaves them alone."""
    if cfg.attention_optimizer == "rule":
        return None
    params = [p for blk in net.attention_blocks().values() for p in blk.parameters()]
    if not params:
        raise ValueError(f"attention_optimizer {cfg.attention_optimizer!r}: the network has no attention blocks "
                         "(a recipe with attention, e.g. sanet-resnet8)")
    net.separately_trained = {id(p) for p in params}
    if cfg.attention_optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.attention_lr if cfg.attention_lr is not None else 1e-3)
    return torch.optim.SGD(params, lr=cfg.attention_lr if cfg.attention_lr is not None else cfg.lr)


def rule_options(cfg: TrainConfig) -> dict:
    """The options of ``cfg``'s rule (its ``options``) with their values in ``cfg``."""
    return {k: getattr(cfg, k) for k in rule_class(cfg.rule).options}


def resume_config(path) -> dict:
    """The training state a checkpoint holds: ``{"config", "epoch", ...}``; a named error for a
    file that is not a resumable neurosal checkpoint."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--resume {p}: no such checkpoint file")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for a bad file
        raise ValueError(f"--resume {p}: not a readable neurosal checkpoint ({exc})") from None
    if not isinstance(ck, dict) or ck.get("format") != "neurosal-checkpoint-1":
        raise ValueError(f"--resume {p}: not a neurosal checkpoint")
    st = ck.get("train")
    if not isinstance(st, dict) or not isinstance(st.get("config"), dict):
        raise ValueError(f"--resume {p}: this checkpoint holds no training state (written by `train` before "
                         "resuming existed, or by another command); it cannot be resumed")
    return {**st, "rule_state": ck.get("rule_state")}


def _train(cfg: TrainConfig, ident: dict, *, out, progress, return_net, state, log=None, writer=None):
    rule, coding, seed, batch, epochs = cfg.rule, cfg.coding, cfg.seed, cfg.batch, cfg.epochs
    card = load_network(cfg.network)
    attach = ident["attach"]
    strategy = attach is not None or cfg.attach_epochs is not None or cfg.attach_gate is not None or \
        cfg.attention_optimizer != "rule" or cfg.attention_lr is not None
    if strategy and not builder_for(card).attention:
        raise ValueError(f"attention strategies (attach, attach_epochs, attach_gate, attention_optimizer, "
                         f"attention_lr) are options of SAnet / ResNet recipes, not of {card.name!r} ({card.kind})")
    if cfg.attention_lr is not None and cfg.attention_optimizer == "rule":
        raise ValueError("attention_lr is the learning rate of attention_optimizer 'sgd' or 'adam'; with 'rule' the "
                         "blocks learn at lr (set attention_optimizer too)")
    if attach is not None:
        card = dataclasses.replace(card, attach=tuple(sorted(set(attach))))
    dev = load_device(cfg.device)
    data = load(cfg.dataset, data_dir=cfg.data_dir, seed=seed, limit_train=cfg.limit_train, limit_test=cfg.limit_test,
                crop=cfg.crop, binarize=cfg.binarize)
    net = build(card, device=dev, coding=coding, seed=seed, steps=cfg.steps, input_shape=data.shape,
                classes=data.classes, array=cfg.array, accelerator=cfg.accelerator)
    where = device_of(net)
    if where.type != "cpu":           # the whole data set on the accelerator, once
        data = dataclasses.replace(data, x_train=data.x_train.to(where), y_train=data.y_train.to(where),
                                   x_test=data.x_test.to(where), y_test=data.y_test.to(where))
    T = net.meta["steps"]
    g = torch.Generator(device="cpu").manual_seed(seed)
    history = []
    start, seconds_before = 0, 0.0
    attn_opt = attention_optimizer(net, cfg)          # before the rule: it leaves these parameters alone
    if state is not None:                 # the chip, the rule, the data order and the ledger as they were
        r = make_rule(rule, net, lr=cfg.lr, seed=seed, **rule_options(cfg))
        load_checkpoint(net, cfg.resume)
        r.load_state_dict(state["rule_state"])
        if attn_opt is not None:
            attn_opt.load_state_dict(state["attention_optimizer"])
        g.set_state(state["data_rng"])
        history = list(state["history"])
        start, seconds_before = int(state["epoch"]), float(state["seconds"])
    t0 = time.perf_counter()
    n = len(data.y_train)
    per = card.periphery
    calib_x = calibration_batch(data.x_train, seed).to(where)

    ledger = Ledger(net, samples=epochs * n)          # the chip's work while training
    test_ledger = Ledger(net, samples=len(data.y_test))
    if state is None:                    # a fresh chip: the recipe's initialization, then the rule
        with ledger.phase("forward"):                 # the calibration reads are chip work
            gains = initialize_gains(net, card, data.x_train, coding=coding, steps=T, seed=seed)
        r = make_rule(rule, net, lr=cfg.lr, seed=seed, **rule_options(cfg))
    else:
        gains = state.get("gains")
    cost = dict(periphery=cfg.periphery, coprocessor=cfg.coprocessor, rule=r.schedule)

    def recalibrate():
        if per.adc_calibration == "epoch":
            with ledger.phase("forward"):                 # calibration reads are chip work too
                calibrate(net, calib_x, coding=coding, steps=T, quantile=per.adc_quantile, seed=seed + 11)
    gate = None
    if state is not None:
        ledger.load_state_dict(state["ledger"])
        if net.attention_state() is not None and state.get("attached") is not None:
            net.attach(state["attached"])
        gate = state.get("gate")
    else:
        if cfg.attach_gate is not None and net.attention_blocks():
            with ledger.phase("forward"):            # the calibration reads are chip work
                gate = attention_deviation(net, card, calib_x)
            net.attach([s_ for s_, d in gate.items() if d > cfg.attach_gate])
        recalibrate()

    def train_state(epoch: int, seconds: float) -> dict:
        return dict(config=ident, epoch=epoch, history=history, data_rng=g.get_state(), ledger=ledger.state_dict(),
                    seconds=seconds, attached=net.attention_state(), gate=gate, gains=gains,
                    attention_optimizer=None if attn_opt is None else attn_opt.state_dict())

    programmed, software_accuracy = None, None
    firing: dict = {}
    with progress_bar(epochs * n, initial=start * n, unit="sample", desc=f"train {rule}",
                      disable=not progress) as bar:
        for ep in range(start, epochs):
            if cfg.attach_epochs is not None and ep == cfg.attach_epochs:
                net.detach()                        # the backbone trains on alone
            perm = torch.randperm(n, generator=g, device="cpu").to(where)
            losses = []
            for i in range(0, n, batch):
                j = perm[i:i + batch]
                with ledger.active():
                    losses.append(r.step(data.x_train[j], data.y_train[j], coding=coding, steps=T,
                                         seed=seed * 1_000_003 + ep * n + i))
                    if attn_opt is not None:          # the blocks' own digital update (gradients from the rule's backward)
                        with ledger.phase("update"):
                            attn_opt.step()
                        attn_opt.zero_grad()
                bar.update(len(j))
            recalibrate()
            if r.programs_at_end and ep == epochs - 1:
                software_accuracy = evaluate(net, data.x_test, data.y_test, coding=coding, steps=T, seed=seed)
                with ledger.phase("update"):
                    programmed = r.finish()
            if ep == epochs - 1:
                counts0 = population_counts(net)
                with test_ledger.phase("forward"):
                    acc = evaluate(net, data.x_test, data.y_test, coding=coding, steps=T, seed=seed)
                firing = firing_rates(counts0, population_counts(net)) if coding != "rate" else {}
            else:
                acc = evaluate(net, data.x_test, data.y_test, coding=coding, steps=T, seed=seed)
            history.append({"epoch": ep + 1, "loss": float(torch.stack(losses).double().mean()), "test_accuracy": acc})
            bar.set_postfix(acc=f"{acc:.3f}")
            if log is not None or writer is not None:
                log_epoch(log, history[-1], net, ledger, seconds_before + time.perf_counter() - t0, writer=writer,
                          **cost)
            if out is not None and ep < epochs - 1:     # the last epoch's checkpoint carries the result too
                save_checkpoint(net, out, rule=rule, rule_state=r.state_dict(),
                                train=train_state(ep + 1, seconds_before + time.perf_counter() - t0))
                keep(f"train:{out}", f"the checkpoint of epoch {ep + 1} at {out} (continue with "
                                     f"`neurosal train --resume {out} --epochs {epochs}`)")
    seconds = seconds_before + time.perf_counter() - t0
    counters = {name: layer.crossbar.counters.as_dict() for name, layer in net.analog_units()}
    tr = cost_report(ledger, **cost)
    te = cost_report(test_ledger, **cost)
    steps_run = max(1, epochs * math.ceil(n / batch))
    result = TrainResult(
        network=card.name, device=dev.name, rule=rule, coding=coding, dataset=cfg.dataset, array=cfg.array,
        epochs=epochs, seed=seed, lr=cfg.lr, batch=batch, steps=T, rounding=cfg.rounding,
        test_accuracy=history[-1]["test_accuracy"], history=history, seconds=seconds, accelerator=str(where),
        threads=torch.get_num_threads(), pulses=sum(c["pulses"] for c in counters.values()),
        verify_reads=sum(c["verify_reads"] for c in counters.values()),
        clipped_cells=sum(c["clipped_cells"] for c in counters.values()), readback=cfg.readback, layers=counters,
        energy_j=tr.energy_j,
        cost={"training": {"energy_j": tr.energy_j, "analog_energy_j": tr.analog_energy_j,
                           "digital_energy_j": tr.digital_energy_j, "latency_s": tr.latency_s,
                           "energy_per_sample_j": tr.energy_j / max(1, tr.samples),
                           "phases": {ph: tr.energy(ph) for ph in PHASES},
                           "components": {c: tr.energy(component=c) for c in COMPONENTS},
                           "energy_per_step_j": tr.energy_j / steps_run},
              "inference": {"energy_per_sample_j": te.energy_j / max(1, te.samples),
                            "analog_energy_j": te.analog_energy_j, "digital_energy_j": te.digital_energy_j,
                            "samples": te.samples},
              "periphery": tr.meta["periphery"], "coprocessor": tr.meta["coprocessor"]},
        digital_share={"inference": te.digital_energy_j / max(te.energy_j, 1e-300),
                       "training": tr.digital_energy_j / max(tr.energy_j, 1e-300)})
    if firing:
        result.firing = firing
        result.warnings = activity_warnings(firing) if coding == "spike" else []
    if gains:
        result.gains = gains
    if net.attention_state() is not None:
        result.attention = {"kind": net.attention_kind, "blocks": sorted(net.attention_blocks()),
                            "attached": net.attention_state(), "attach_epochs": cfg.attach_epochs,
                            "attach_gate": cfg.attach_gate, "deviation": gate,
                            "optimizer": cfg.attention_optimizer, "lr": None if attn_opt is None else
                            attn_opt.param_groups[0]["lr"]}
    if programmed:
        result.program_pulses = programmed["program_pulses"]
        result.verify_reads = programmed["verify_reads"]
        result.converged = programmed["converged"]
        result.software_accuracy = software_accuracy
    if out is not None:
        save_checkpoint(net, out, rule=rule, rule_state=r.state_dict(), result=result.as_dict(),
                        train=train_state(epochs, seconds))
        unkeep(f"train:{out}")
    return (result, net, data) if return_net else result
