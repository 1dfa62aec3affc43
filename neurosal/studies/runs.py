"""Studies and sweeps: a base configuration and grid axes, expanded to trials, run on local
worker processes or a Ray cluster, each finished trial one JSON line.

A study file (TOML)::

    name = "kwon-hybrid"
    cite = "Kwon et al., ... Fig. 4"
    description = "..."
    cut = "what this version cut against the paper's full setting"

    [base]                          # any `train` option, and card fields (below)
    network = "mlp-784-400-400-10"
    dataset = "mnist"
    data_dir = "data/mnist"
    epochs = 1

    [grid]                          # axes: every combination is a trial
    device = ["ag-a-si", "extreme-nonlinear"]
    rule = ["hybrid", "bp"]
    seed = [0, 1, 2]
    "device.noise.c2c" = [0.0, 0.02]        # a device-card field: no card per value
    "network.periphery.adc_bits" = [4, 8, "none"]   # a network-recipe field ("none": its default)

    [variants.full]                 # `--variant full`: replaces base values (and, for a key
    limit_train = 60000             # that is a grid axis, that axis's list of values)

``grid`` may also be an array of tables (``[[grid]]``): the union of their products, for
axes that only make sense together (e.g. ``rounding`` only for ``bp``).

A card field may also take a table of fields set together (``"network.charge" = [{e_plus =
1.0, e_minus = -1.0}, ...]``). ``data_dir`` may hold ``{dataset}``, replaced by each trial's
dataset (``--data-dir ../data/{dataset}``).

A trial's identity is its configuration (without ``data_dir``): rerunning a sweep skips
the trials whose result is already in the output file, so a killed sweep loses nothing it had
finished; a failed trial is recorded with its error and run again next time.

May import: :mod:`neurosal.training` (it runs trials), cards and infrastructure; Ray only when asked for.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import multiprocessing as mp
import os
import platform
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Optional

import numpy
import torch

from ..accel import _usable_cores, set_threads
from ..cards import CardError, card_dir, from_dict, list_cards, load_toml, to_dict
from ..devices import DeviceCard, load_device
from ..files import Owner, check_output, keep, unkeep
from ..networks import NetworkCard, load_network
from ..progress import bar as progress_bar
from ..training import STUDY_OPTIONS, train

__all__ = ["Study", "load_study", "expand", "trial_id", "run_trial", "sweep", "read_results", "TRAIN_OPTIONS",
           "list_studies", "resolve_study"]

#: the `train` options a study may set (and their Python types): the study fields of TrainConfig
TRAIN_OPTIONS = STUDY_OPTIONS
_TOP = ("name", "cite", "description", "cut", "base", "grid", "variants")
_NOT_IDENTITY = ("data_dir",)            # where the data lie does not change a trial


@dataclass
class Study:
    name: str
    base: dict
    grids: list
    cite: str = ""
    description: str = ""
    cut: str = ""
    variant: Optional[str] = None
    source: str = ""
    variants: dict = field(default_factory=dict)


def _check_key(key: str, source, where: str) -> None:
    if key in TRAIN_OPTIONS:
        return
    if key.startswith(("device.", "network.")) and len(key.split(".")) >= 2 and all(key.split(".")):
        return
    raise CardError(source, f"{where}.{key}" if where else key,
                    "unknown option; allowed: " + ", ".join(TRAIN_OPTIONS) +
                    ", or a card field as 'device.<field>' / 'network.<field>' (e.g. 'device.noise.c2c')")


def _check_value(key: str, value, source, where: str) -> None:
    typ = TRAIN_OPTIONS.get(key)
    if typ is None:
        scalar = (int, float, str, bool)
        ok = isinstance(value, scalar) or (isinstance(value, list) and all(isinstance(v, scalar) for v in value)) \
            or (isinstance(value, dict) and all(isinstance(v, scalar) for v in value.values()))
        if not ok:
            raise CardError(source, f"{where}.{key}", "a card field takes a number, string, boolean, a list of "
                            f"them, or a table of fields (set together), got {value!r}")
        return
    ok = isinstance(value, typ) and not isinstance(value, bool) or (typ is float and isinstance(value, int)
                                                                       and not isinstance(value, bool))
    if not ok:
        raise CardError(source, f"{where}.{key}", f"expected {typ.__name__}, got {value!r}")


def list_studies() -> list[str]:
    """Names of the studies shipped with neurosal (``neurosal sweep NAME``)."""
    return list_cards("studies")


def resolve_study(name_or_path: str | Path) -> Path:
    """A study file: a path, or the name of a shipped study (``'kwon-hybrid'``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    s = str(name_or_path)
    if not s.endswith(".toml") and "/" not in s and "\\" not in s:
        shipped = card_dir("studies") / f"{s}.toml"
        if shipped.is_file():
            return shipped
        raise FileNotFoundError(f"{s}: no such study file, and no shipped study of that name; shipped: "
                                f"{', '.join(list_studies())} (or give a path to a .toml file)")
    raise FileNotFoundError(f"{path}: no such study file")


def load_study(path: str | Path, variant: Optional[str] = None) -> Study:
    """Read and validate a study file (a path, or a shipped study's name); errors name the file
    and the key."""
    path = resolve_study(path)
    data = load_toml(path)
    unknown = sorted(set(data) - set(_TOP))
    if unknown:
        raise CardError(path, unknown[0], f"unknown key; allowed: {', '.join(_TOP)}")
    if not isinstance(data.get("name"), str) or not data["name"]:
        raise CardError(path, "name", "a study needs a name (a string)")
    base = data.get("base", {})
    if not isinstance(base, dict):
        raise CardError(path, "base", "expected a table of train options")
    for k, v in base.items():
        _check_key(k, path, "base")
        _check_value(k, v, path, "base")
    grids = data.get("grid", [{}])
    grids = [grids] if isinstance(grids, dict) else grids
    if not isinstance(grids, list) or not all(isinstance(g, dict) for g in grids):
        raise CardError(path, "grid", "expected a table of axes ([grid]) or an array of them ([[grid]])")
    for i, g in enumerate(grids):
        where = "grid" if len(grids) == 1 else f"grid[{i}]"
        for k, vals in g.items():
            _check_key(k, path, where)
            if not isinstance(vals, list) or not vals:
                raise CardError(path, f"{where}.{k}", "an axis is a non-empty list of values")
            for v in vals:
                _check_value(k, v, path, where)
    variants = data.get("variants", {})
    if not isinstance(variants, dict) or not all(isinstance(v, dict) for v in variants.values()):
        raise CardError(path, "variants", "expected tables of base values ([variants.NAME])")
    if variant is not None:
        if variant not in variants:
            raise CardError(path, "variants", f"no variant {variant!r}; available: {', '.join(variants) or 'none'}")
        new_base = dict(base)
        for k, v in variants[variant].items():
            _check_key(k, path, f"variants.{variant}")
            if any(k in g for g in grids):          # an axis: the variant's list of values replaces it
                if not isinstance(v, list) or not v:
                    raise CardError(path, f"variants.{variant}.{k}", f"{k} is a grid axis: give a non-empty list")
                for x in v:
                    _check_value(k, x, path, f"variants.{variant}")
                grids = [{**g, k: v} if k in g else g for g in grids]
            else:
                _check_value(k, v, path, f"variants.{variant}")
                new_base[k] = v
        base = new_base
    return Study(name=data["name"] + (f"-{variant}" if variant else ""), base=base, grids=grids,
                 cite=data.get("cite", ""), description=data.get("description", ""), cut=data.get("cut", ""),
                 variant=variant, source=str(path), variants=variants)


def expand(study: Study) -> list[dict]:
    """The trials of a study: base + every combination of each grid's axes (in file order),
    duplicates removed."""
    trials, seen = [], set()
    for g in study.grids:
        keys = list(g)
        for combo in itertools.product(*(g[k] for k in keys)):
            cfg = {**study.base, **dict(zip(keys, combo))}
            tid = trial_id(cfg)
            if tid not in seen:
                seen.add(tid)
                trials.append(cfg)
    for cfg in trials:
        for need in ("network", "device"):
            if need not in cfg:
                raise CardError(study.source, need, "every trial needs a network and a device (in base or grid)")
    return trials


def trial_id(cfg: dict) -> str:
    ident = {k: v for k, v in cfg.items() if k not in _NOT_IDENTITY}
    return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- one trial
def _override(card_dict: dict, path: list, value) -> None:
    """Set a nested field of a card's dict (a missing table is created: the card's own
    validation then names a field that does not exist); the string ``"none"`` removes the
    field, so that its default applies (e.g. ``"network.periphery.adc_bits" = "none"``: an
    ideal ADC)."""
    d = card_dict
    for p in path[:-1]:
        d = d.setdefault(p, {})
    if isinstance(value, dict):            # a table: its fields set together
        sub = d.setdefault(path[-1], {})
        for k, v in value.items():
            _override(sub, [k], v) if isinstance(sub, dict) else None
        return
    if value == "none":
        d.pop(path[-1], None)
    else:
        d[path[-1]] = value


def _cards(cfg: dict):
    def card(kind: str, cls, load, what: str):
        over = {k[len(kind) + 1:]: v for k, v in cfg.items() if k.startswith(kind + ".")}
        c = load(cfg[kind])
        if not over:
            return c
        d = to_dict(c)
        for k, v in sorted(over.items()):
            _override(d, k.split("."), v)
        return from_dict(cls, d, source=f"{what} {cfg[kind]} with {over}")
    return (card("network", NetworkCard, load_network, "network recipe"),
            card("device", DeviceCard, load_device, "device card"))


def _versions() -> dict:
    try:
        ns = version("neurosal")
    except Exception:  # pragma: no cover
        ns = "unknown"
    return {"neurosal": ns, "torch": torch.__version__, "numpy": numpy.__version__}


def run_trial(cfg: dict, *, study: str = "", accelerator=None, threads: Optional[int] = None) -> dict:
    """Run one trial (``train`` with the configuration, card fields overridden) and return its
    JSON-ready record; an exception becomes a record with ``status = 'error'``."""
    n_threads = set_threads(threads)
    t0 = time.perf_counter()
    rec = {"id": trial_id(cfg), "study": study, "config": cfg, "versions": _versions(), "host": platform.node(),
           "threads": n_threads, "accelerator": str(accelerator or "cpu")}
    try:
        net, dev = _cards(cfg)
        kw = {k: v for k, v in cfg.items() if k in TRAIN_OPTIONS and k not in ("network", "device")}
        if "data_dir" in kw and "dataset" in kw:         # "data/{dataset}": one folder per dataset
            kw["data_dir"] = kw["data_dir"].replace("{dataset}", kw["dataset"])
        res = train(net, dev, progress=False, accelerator=accelerator, **kw)
        rec.update(status="ok", result=json.loads(json.dumps(res.as_dict(), default=str)))
    except Exception as exc:  # a failed trial is a result too
        rec.update(status="error", error=f"{type(exc).__name__}: {exc}",
                   traceback="".join(traceback.format_exception(exc))[-4000:])
    rec["seconds"] = time.perf_counter() - t0
    return rec


# ----------------------------------------------------------------------------- results file
def read_results(path: str | Path) -> list[dict]:
    """The records of a results file, in order; a torn last line (a killed writer) is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    with open(path, "rb") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                continue
            if isinstance(rec, dict) and "id" in rec:
                out.append(rec)
    return out


def _append(path: Path, rec: dict) -> None:
    """Append one record as one line, whole or not at all for readers: one write() under an
    exclusive lock, then fsync (several sweeps may share the file)."""
    line = (json.dumps(rec, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        # a torn line from a killed writer would glue onto ours: start on a fresh line
        size = os.fstat(fd).st_size
        if size:
            with open(path, "rb") as fh:
                fh.seek(size - 1)
                if fh.read(1) != b"\n":
                    line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- the sweep
def _exit_with_parent(parent: int, every: float) -> None:
    """Ends this worker (``os._exit``) once the process that started it is gone.

    A pool worker busy with a trial does not notice that its sweep was killed (``kill``, a closed
    terminal, a job scheduler's limit): it would run its trial to the end, and then the next,
    holding cores nobody sees. Its parent's death reparents it, so ``os.getppid`` changes."""
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(3)


def _worker_init(threads: int, parent: Optional[int] = None, every: float = 0.5) -> None:
    set_threads(threads)
    if parent is not None:
        threading.Thread(target=_exit_with_parent, args=(parent, every), daemon=True,
                         name="neurosal-exit-with-parent").start()


def _local_run(args) -> dict:
    cfg, study, accelerator, threads = args
    return run_trial(cfg, study=study, accelerator=accelerator, threads=threads)


def sweep(study_path: str | Path, out: str | Path, *, workers: int = 1, ray: Optional[str] = None,
          accelerator=None, variant: Optional[str] = None, data_dir: Optional[str] = None, progress: bool = True,
          ray_init: Optional[dict] = None, gpus_per_trial: float = 0.0, threads: Optional[int] = None) -> dict:
    """Run every trial of a study not yet in ``out``; returns counts (done before, run, failed).

    ``workers`` local processes (``threads`` per worker; default: the usable cores divided among
    them), or,
    with ``ray`` (``'auto'``, ``'local'`` or a cluster address), Ray tasks (``ray_init``: extra
    ``ray.init`` arguments; ``gpus_per_trial``: a GPU fraction per task)."""
    study = load_study(study_path, variant)
    trials = expand(study)
    if data_dir is not None:
        trials = [{**t, "data_dir": str(data_dir)} for t in trials]
    out = check_output(out, overwrite=True)       # appended to: a rerun continues it
    # every trial's cards are built once here, so that a bad card field fails before any work
    seen = set()
    for t in trials:
        key = json.dumps({k: v for k, v in t.items() if k in ("device", "network") or "." in k}, sort_keys=True)
        if key not in seen:
            seen.add(key)
            try:
                _cards(t)
            except (CardError, FileNotFoundError, ValueError) as exc:
                raise CardError(study.source, None, f"a trial's cards do not build ({exc})") from None
    done = {r["id"] for r in read_results(out) if r.get("status") == "ok"}
    todo = [t for t in trials if trial_id(t) not in done]
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    threads = int(threads) if threads is not None else max(1, _usable_cores() // workers)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    counts = {"trials": len(trials), "done_before": len(trials) - len(todo), "run": 0, "failed": 0}
    owner = Owner(out).acquire()          # one sweep per results file at a time
    bar = progress_bar(len(trials), initial=counts["done_before"], unit="trial", desc=study.name,
               disable=not progress)

    def finish(rec: dict) -> None:
        _append(out, rec)
        counts["run"] += 1
        counts["failed"] += rec.get("status") != "ok"
        bar.update(1)
        bar.set_postfix(failed=counts["failed"])
        keep(f"sweep:{out}", f"{counts['done_before'] + counts['run']} finished trial(s) in {out} (the same "
                             "command runs the rest)")

    try:
        if not todo:
            pass
        elif ray is not None:
            import ray as _ray                                    # optional extra: pip install "neurosal[ray]"
            init = dict(ray_init or {})
            if ray not in ("local",):
                init.setdefault("address", ray)
            if not _ray.is_initialized():
                _ray.init(**init)
            task = _ray.remote(num_cpus=threads, num_gpus=gpus_per_trial)(_local_run)
            refs = [task.remote((t, study.name, accelerator, threads)) for t in todo]
            while refs:
                ready, refs = _ray.wait(refs, num_returns=1)
                finish(_ray.get(ready[0]))
        elif workers == 1:
            for t in todo:
                finish(run_trial(t, study=study.name, accelerator=accelerator, threads=threads))
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                     initializer=_worker_init, initargs=(threads, os.getpid())) as ex:
                futs = [ex.submit(_local_run, (t, study.name, accelerator, threads)) for t in todo]
                try:
                    for f in as_completed(futs):
                        finish(f.result())
                except KeyboardInterrupt:
                    ex.shutdown(wait=False, cancel_futures=True)
                    raise
    finally:
        bar.close()
        owner.release()
    unkeep(f"sweep:{out}")
    return counts
