"""The README stays true: its Python imports resolve and its command lines parse."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import re
import shlex
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", README.read_text(), re.S)


def _python_imports():
    for lang, body in BLOCKS:
        if lang != "python":
            continue
        for m in re.finditer(r"^\s*from (neurosal[\w.]*) import ([\w, ]+?)(?:\s+as\s+\w+)?\s*(?:#.*)?$", body, re.M):
            yield m.group(1), [n.strip() for n in m.group(2).split(",")]
        for m in re.finditer(r"^\s*import (neurosal[\w.]*)", body, re.M):
            yield m.group(1), []


def _command_lines():
    for lang, body in BLOCKS:
        if lang not in ("sh", "bash", "console"):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("neurosal "):
                yield re.sub(r"\s\[[^\]]*\]", "", line)      # [--json] marks an optional flag


IMPORTS = list(_python_imports())
COMMANDS = list(_command_lines())


def test_the_readme_has_examples():
    assert len(IMPORTS) >= 5 and len(COMMANDS) >= 20


@pytest.mark.parametrize("module,names", IMPORTS, ids=[m for m, _ in IMPORTS])
def test_readme_imports_resolve(module, names):
    mod = importlib.import_module(module)
    missing = [n for n in names if not hasattr(mod, n) and
               importlib.util.find_spec(f"{module}.{n}") is None]
    assert not missing, f"README imports {missing} from {module}, which has no such names"


@pytest.mark.parametrize("line", COMMANDS)
def test_readme_command_lines_parse(line):
    """Every `neurosal ...` line of the README names a real command with real options."""
    from neurosal.cli import build_parser
    argv = shlex.split(line)[1:]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            build_parser().parse_args(argv)
        except SystemExit as exc:
            assert exc.code == 0, f"{line}\n{err.getvalue()}"
