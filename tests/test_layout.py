"""The package's architecture, checked by walking its imports (nothing is imported to do so).

Rooms are the top-level modules and subpackages of :mod:`neurosal`. Each room imports only rooms
below it in :data:`ROOMS` (so there is no cycle between rooms), there is no import cycle between
modules at import time, a function-local import is only ever of an optional or heavy dependency,
and every subpackage's docstring says what it may import -- and the code keeps to it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "neurosal"

#: Rooms from the bottom up: a room may import only rooms before it.
ROOMS = ["cards", "files", "accel", "kernels", "progress", "coding", "datasets", "recording", "devices", "plots",
         "crossbar", "neurons", "coprocessor", "cost", "engine", "networks", "learning", "interop",
         "training", "experiments", "studies", "cli", "__main__"]

#: Imports allowed inside a function: optional extras and what is slow to import and rarely used.
LOCAL_OK = ("ray", "torch.utils.tensorboard", "matplotlib", "sklearn.datasets")

#: Infrastructure any room above it may use without naming it in its docstring.
INFRA = {"cards", "files", "accel", "kernels", "progress"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(name: str):
    """(imported module, line, inside a function) for every import of module ``name``, relative
    imports resolved, ``from pkg import mod`` pointing at the module, TYPE_CHECKING blocks left out."""
    path = MODULES[name]
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    out = []

    def visit(node, local):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, local) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module
                for a in child.names:
                    sub = f"{mod}.{a.name}"
                    out.append((sub if sub in MODULES else mod, child.lineno, local))
            visit(child, inner)

    visit(tree, False)
    return out


def _room(mod: str):
    parts = mod.split(".")
    return parts[1] if parts[0] == "neurosal" and len(parts) > 1 else None


def module_graph() -> dict:
    """Module -> the neurosal modules it imports at import time."""
    return {m: {i for i, _, local in _imports(m) if not local and i in MODULES and i != m} for m in MODULES}


def room_graph() -> dict:
    g: dict = {}
    for m, deps in module_graph().items():
        r = _room(m)
        if r is None:
            continue
        g.setdefault(r, set()).update(_room(d) for d in deps if _room(d) not in (None, r))
    return g


def _cycles(graph: dict) -> list:
    """Strongly connected components with more than one member (Tarjan)."""
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in graph:
        if v not in index:
            strong(v)
    return comps


def test_every_room_is_ranked():
    rooms = {_room(m) for m in MODULES} - {None}
    assert rooms == set(ROOMS), f"rooms not in ROOMS: {rooms - set(ROOMS)}; gone: {set(ROOMS) - rooms}"


def test_no_import_cycles():
    """No module imports, at import time, one that imports it back (directly or around a loop)."""
    assert _cycles(module_graph()) == []


def test_rooms_import_only_rooms_below():
    bad = [f"{r} imports {d}" for r, deps in room_graph().items() for d in deps
           if ROOMS.index(d) >= ROOMS.index(r)]
    assert not bad, "a room imports one at or above it:\n" + "\n".join(sorted(bad))


def test_function_local_imports_are_only_optional_or_heavy():
    bad = [f"{MODULES[m].relative_to(PKG.parent)}:{line} imports {i}" for m in MODULES
           for i, line, local in _imports(m) if local and not i.startswith(LOCAL_OK)]
    assert not bad, "function-local imports of required modules:\n" + "\n".join(bad)


@pytest.mark.parametrize("room", sorted({_room(m) for m in MODULES if MODULES[m].name == "__init__.py"} - {None}))
def test_subpackage_docstring_says_what_it_may_import(room):
    """Each subpackage's docstring has a 'May import:' sentence; where it names rooms, the code
    imports no other (the infrastructure rooms aside)."""
    doc = ast.get_docstring(ast.parse((PKG / room / "__init__.py").read_text())) or ""
    m = re.search(r"May import:(.*?)(?:\.\s|\.$|$)", doc.replace("\n", " "), re.S)
    assert m, f"neurosal/{room}/__init__.py: the docstring does not say what the room may import"
    named = set(re.findall(r"neurosal\.(\w+)", m.group(1)))
    said = m.group(1).strip().lower()
    actual = room_graph().get(room, set())
    if said.startswith("nothing of neurosal"):
        assert actual == set(), f"{room} says it imports nothing of neurosal but imports {sorted(actual)}"
    elif named and not said.startswith(("everything", "anything")) and "what it builds on" not in said:
        extra = actual - named - INFRA
        assert not extra, f"{room} imports {sorted(extra)}, which its docstring does not allow ({m.group(1).strip()})"


def test_the_walk_sees_a_cycle_and_a_local_import(tmp_path):
    """The checks can fail: a loop and a misplaced import are found."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
