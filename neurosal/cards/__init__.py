"""Model cards: small frozen dataclasses loaded from TOML and validated on load.

A card is to neurosal what a SPICE model card is to a circuit simulator: data, not
code. Every card type is a frozen dataclass whose fields carry their allowed range in
``dataclasses.field(metadata=...)``; :func:`from_dict` checks a parsed TOML table
against it and raises :class:`CardError` naming the file, the field and what is allowed.

The cards shipped with neurosal live beside this module, in the package itself, so a
wheel installed anywhere has them:

* ``neurosal/cards/devices/*.toml`` — the device library; ``devices/periphery/`` and
  ``devices/coprocessor/`` hold the cost cards of the periphery and the co-processor;
* ``neurosal/cards/networks/*.toml`` — the network recipes;
* ``neurosal/cards/studies/*.toml`` — the shipped studies (``neurosal sweep kwon-hybrid``).

Anywhere a card name is accepted, a path to a TOML file of the user's own is too.

May import: nothing of neurosal (every other room imports this one).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["CardError", "spec", "from_dict", "load_toml", "card_dir", "resolve_card", "list_cards"]


class CardError(ValueError):
    """A card could not be read or failed validation.

    The message names the file, the field (dotted path for nested tables) and what
    is allowed.
    """

    def __init__(self, source: str | Path | None, field: str | None, message: str):
        self.source = str(source) if source is not None else "<card>"
        self.field = field
        where = f"{self.source}: " + (f"field '{field}': " if field else "")
        super().__init__(where + message)


def spec(default: Any = dataclasses.MISSING, *, lo: float | None = None, hi: float | None = None,
         lo_open: bool = False, hi_open: bool = False, choices: tuple | None = None,
         unit: str = "", doc: str = "", default_factory: Any = dataclasses.MISSING, finite: bool = True):
    """A dataclass field with a validated range ``[lo, hi]`` (open ends optional).

    Numbers must be finite unless ``finite=False`` (e.g. a reversal potential, where ``inf``
    means the ideal limit): an infinite figure that validates would turn into NaN later."""
    meta = dict(lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open, choices=choices, unit=unit, doc=doc, finite=finite)
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _range_text(m: dict) -> str:
    if m.get("choices"):
        return "one of " + ", ".join(repr(c) for c in m["choices"])
    lo, hi = m.get("lo"), m.get("hi")
    left = ("(" if m.get("lo_open") else "[") + (f"{lo:g}" if lo is not None else "-inf")
    right = (f"{hi:g}" if hi is not None else "inf") + (")" if m.get("hi_open") else "]")
    unit = f" {m['unit']}" if m.get("unit") else ""
    return f"a number in {left}, {right}{unit}"


def _check_number(value: Any, m: dict, source, name: str, want_int: bool) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CardError(source, name, f"expected {'an integer' if want_int else 'a number'}, got {value!r}; "
                        f"allowed: {_range_text(m)}")
    if want_int and not float(value).is_integer():
        raise CardError(source, name, f"expected an integer, got {value!r}")
    if isinstance(value, float) and math.isnan(value):
        raise CardError(source, name, f"NaN is not allowed; allowed: {_range_text(m)}")
    if isinstance(value, float) and math.isinf(value) and m.get("finite", True):
        raise CardError(source, name, f"{value!r} is not allowed (the value must be finite); "
                        f"allowed: {_range_text(m)}")
    lo, hi = m.get("lo"), m.get("hi")
    bad = (lo is not None and (value < lo or (m.get("lo_open") and value == lo))) or \
          (hi is not None and (value > hi or (m.get("hi_open") and value == hi)))
    if bad:
        raise CardError(source, name, f"value {value!r} out of range; allowed: {_range_text(m)}")
    return int(value) if want_int else float(value)


def _strip_optional(tp):
    if get_origin(tp) is Union:
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def from_dict(cls, data: dict, source: str | Path | None = None, prefix: str = ""):
    """Build the frozen dataclass ``cls`` from a TOML table, validating every field."""
    if not isinstance(data, dict):
        raise CardError(source, prefix.rstrip(".") or None, f"expected a table, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if not data and not prefix:
        need = [f.name for f in fields.values()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        raise CardError(source, None, "the card is empty" + (f"; it needs at least: {', '.join(need)}" if need else ""))
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise CardError(source, prefix + unknown[0],
                        f"unknown field; allowed fields here: {', '.join(sorted(fields))}")
    hints = get_type_hints(cls)
    kwargs = {}
    for name, f in fields.items():
        full = prefix + name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                tp, _ = _strip_optional(hints[name])
                allowed = (_range_text(f.metadata) if tp in (int, float) or f.metadata.get("choices") else
                           "a string" if tp is str else None)
                raise CardError(source, full, f"required field is missing; allowed: {allowed}"
                                if allowed else "required field is missing")
            continue
        value = data[name]
        tp, _optional = _strip_optional(hints[name])
        m = dict(f.metadata)
        if dataclasses.is_dataclass(tp):
            kwargs[name] = from_dict(tp, value, source, prefix=full + ".")
        elif tp is int:
            kwargs[name] = _check_number(value, m, source, full, want_int=True)
        elif tp is float:
            kwargs[name] = _check_number(value, m, source, full, want_int=False)
        elif tp is str:
            if not isinstance(value, str):
                raise CardError(source, full, f"expected a string, got {value!r}")
            if m.get("choices") and value not in m["choices"]:
                raise CardError(source, full, f"unknown value {value!r}; allowed: {_range_text(m)}")
            kwargs[name] = value
        elif get_origin(tp) is tuple:
            if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                      for v in value):
                raise CardError(source, full, "expected a list of numbers")
            for i, v in enumerate(value):
                _check_number(v, m, source, f"{full}[{i}]", want_int=False)
            kwargs[name] = tuple(float(v) for v in value)
        elif tp is bool:
            if not isinstance(value, bool):
                raise CardError(source, full, f"expected true or false, got {value!r}")
            kwargs[name] = value
        else:  # pragma: no cover - programming error in a card class
            raise TypeError(f"unsupported card field type {tp!r} for {full}")
    obj = cls(**kwargs)
    check = getattr(obj, "_validate", None)
    if check is not None:
        check(source)
    return obj


def to_dict(card) -> dict:
    """The card as a plain dict (TOML/JSON-ready); ``None`` fields are dropped."""
    out = {}
    for f in dataclasses.fields(card):
        v = getattr(card, f.name)
        if v is None:
            continue
        if dataclasses.is_dataclass(v):
            v = to_dict(v)
        elif isinstance(v, tuple):
            v = list(v)
        out[f.name] = v
    return out


def load_toml(path: str | Path) -> dict:
    """Parse a TOML file; a missing or malformed file gives a :class:`CardError`."""
    path = Path(path)
    if path.is_dir():
        raise CardError(path, None, "is a folder, not a card file (.toml)")
    if not path.is_file():
        raise CardError(path, None, "no such file")
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except PermissionError:
        raise CardError(path, None, "cannot be read (permission denied)") from None
    except OSError as exc:
        raise CardError(path, None, f"cannot be read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CardError(path, None, f"not a UTF-8 text file (byte {exc.start}); a card is TOML text") from None
    if "\x00" in text:
        raise CardError(path, None, "a binary file, not a card (TOML text)")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CardError(path, None, f"not valid TOML: {exc}") from None


def card_dir(kind: str) -> Path:
    """Folder of the cards shipped with neurosal (``kind``: 'devices', 'networks' or 'studies')."""
    d = Path(__file__).resolve().parent / kind
    if not d.is_dir():
        raise FileNotFoundError(f"neurosal's {kind} cards were not found in {d}; "
                                "allowed kinds: devices, networks, studies")
    return d


def list_cards(kind: str, subdir: str = "") -> list[str]:
    """Names of the shipped cards of one kind (file stems), sorted."""
    d = card_dir(kind) / subdir if subdir else card_dir(kind)
    return sorted(p.stem for p in d.glob("*.toml"))


def resolve_card(name_or_path: str | Path, kind: str, subdir: str = "") -> Path:
    """A card name (shipped) or a path to a TOML file -> the path of the file."""
    s = str(name_or_path)
    p = Path(s)
    if s.endswith(".toml") or p.is_file() or p.is_dir() or "/" in s or "\\" in s:
        if p.is_dir():
            raise CardError(p, None, "is a folder, not a card file (.toml)")
        if not p.is_file():
            raise CardError(p, None, "no such card file")
        return p
    d = card_dir(kind) / subdir if subdir else card_dir(kind)
    cand = d / f"{s}.toml"
    if not cand.is_file():
        raise CardError(s, None, f"no shipped {kind.rstrip('s')} card of that name; available: "
                        f"{', '.join(list_cards(kind, subdir))} (or give a path to a .toml file)")
    return cand
