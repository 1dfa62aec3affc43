"""Output files that lose nothing: checked before the work, owned while written, replaced
atomically.

* :func:`check_output` runs before any work: the folder of an output must exist and be
  writable, the name must not be a folder, and an existing file is replaced only with
  ``overwrite``. A typo in ``--out`` fails in a second, not after an hour of training.
* :class:`Owner` takes exclusive ownership of an output for a run (an ``fcntl.flock`` on
  ``.<name>.lock`` beside it): a second run given the same output fails at once with
  :class:`OutputBusyError` and touches nothing of the first.
* :func:`atomic` writes a file under a temporary name in the same folder, ``fsync``s it and
  renames it over the target (then ``fsync``s the folder): a crash, a full disk or Ctrl-C
  leaves either the old file or the new one, never a torn one.
* :func:`keep` / :func:`kept` record what an interrupted command leaves behind (a finished
  epoch's checkpoint, an incomplete recording, finished sweep trials), which the command
  line prints on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path
from typing import Iterator, Optional

__all__ = ["OutputError", "OutputBusyError", "check_output", "Owner", "atomic", "fsync_dir", "keep", "unkeep",
           "kept", "savefig", "write_text"]


class OutputError(OSError):
    """An output could not be written (full disk, permissions); nothing older was lost."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class OutputBusyError(ValueError):
    """Another run is writing the same output."""


_KEPT: dict = {}


def keep(key: str, message: Optional[str]) -> None:
    """Note what an interruption now would leave behind (``None`` forgets ``key``)."""
    if message is None:
        _KEPT.pop(key, None)
    else:
        _KEPT[key] = message


def unkeep(key: str) -> None:
    _KEPT.pop(key, None)


def kept() -> list:
    """What interrupted commands left, in the order it was noted."""
    return list(_KEPT.values())


def check_output(path, *, overwrite: bool = False, what: str = "--out") -> Path:
    """Check, before any work, that ``path`` can be written: its folder exists and is
    writable, it is not a folder, and it does not exist unless ``overwrite``."""
    p = Path(path)
    if str(path) == "" or p.name in ("", ".", ".."):
        raise ValueError(f"{what} {str(path)!r}: not a file name")
    if p.is_dir():
        raise IsADirectoryError(f"{what} {p}: is a folder; give a file name inside it")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise FileNotFoundError(f"{what} {p}: the folder {parent} does not exist (create it first)")
    if not parent.is_dir():
        raise NotADirectoryError(f"{what} {p}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} {p}: cannot write in the folder {parent} (permission denied)")
    if p.exists() and not overwrite:
        raise FileExistsError(f"{what} {p} exists; pass --overwrite (overwrite=True) to replace it")
    if p.exists() and not os.access(p, os.W_OK):
        raise PermissionError(f"{what} {p}: the existing file is not writable (permission denied)")
    return p


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:          # pragma: no cover - e.g. a platform without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:          # pragma: no cover
        pass
    finally:
        os.close(fd)


def _full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def atomic(path, *, what: str = "output") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; write the file there. On a clean exit it is
    ``fsync``'d and renamed over ``path``; on any error it is removed and ``path`` is left as
    it was. A full disk or another ``OSError`` becomes :class:`OutputError`."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, p)
        fsync_dir(p.parent if str(p.parent) else Path("."))
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            why = "the disk is full" if _full(exc) else (exc.strerror or str(exc))
            old = f"; the earlier {p} is untouched" if p.exists() else ""
            raise OutputError(exc.errno, f"could not write the {what} {p}: {why}{old}") from None
        raise


class Owner:
    """Exclusive ownership of an output file for one run (``with Owner(path): ...``).

    The lock is an ``flock`` on ``.<name>.lock`` in the output's folder, released (and the
    lock file removed) when the run ends, however it ends; a run killed outright releases
    it too (the kernel drops the lock with the process)."""

    def __init__(self, path, *, what: str = "--out"):
        self.path = Path(path)
        self.lock = self.path.with_name(f".{self.path.name}.lock")
        self.what = what
        self.fd: Optional[int] = None

    def acquire(self) -> "Owner":
        for _ in range(10):
            fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise OutputBusyError(f"{self.what} {self.path}: another neurosal run is writing it now "
                                      f"(it holds {self.lock}); wait for it to finish or choose another name") from None
            try:   # the file we locked must still be the one at the name (a finishing run unlinks it)
                same = os.fstat(fd).st_ino == os.stat(self.lock).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self.fd = fd
                return self
            os.close(fd)
        raise OutputBusyError(f"{self.what} {self.path}: could not take its lock {self.lock}")  # pragma: no cover

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.lock)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "Owner":
        return self.acquire()

    def __exit__(self, *exc) -> bool:
        self.release()
        return False


def savefig(fig, path, **kw) -> Path:
    """``fig.savefig`` through :func:`atomic` (the format from the name's suffix, PNG without one)."""
    p = Path(path)
    with atomic(p, what="plot") as tmp:
        fig.savefig(tmp, format=(p.suffix[1:] or "png").lower(), **kw)
    return p


def write_text(path, text: str, *, what: str = "output") -> Path:
    """Write a text file through :func:`atomic`."""
    p = Path(path)
    with atomic(p, what=what) as tmp:
        with open(tmp, "w", newline="") as fh:
            fh.write(text)
    return p
