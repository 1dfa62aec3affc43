r"""``table``: a measured curve, the conductance after each pulse from :math:`G_\min` up
(``potentiation``) and from :math:`G_\max` down (``depression``). The pulse axis is interpolated
linearly, so non-integer positions (after noise, or a cell's own :math:`P_\max`) are handled."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from ...cards import CardError, spec
from ..family import ResponseFamily, interp, register


@register
class Table(ResponseFamily):
    name = "table"
    order = 4
    params = {
        "potentiation": (Optional[tuple[float, ...]], spec(None, lo=0.0, hi=1.0, unit="S",
                                                           doc="table: G after each pulse from Gmin")),
        "depression": (Optional[tuple[float, ...]], spec(None, lo=0.0, hi=1.0, unit="S",
                                                         doc="table: G after each pulse from Gmax")),
    }

    def __init__(self, card):
        super().__init__(card)
        p = np.asarray(card.potentiation, dtype=np.float64)
        d = np.asarray(card.depression, dtype=np.float64)
        self._tab_up = torch.tensor((p - card.g_min) / card.g_range, device="cpu")      # travel up from Gmin
        self._tab_dn_v = torch.tensor((card.g_max - d) / card.g_range, device="cpu")    # travel down from Gmax
        self._n_up, self._n_dn = len(p) - 1, len(d) - 1
        self._tables: dict = {}

    @classmethod
    def validate(cls, card, source) -> None:
        for f, inc in (("potentiation", True), ("depression", False)):
            t = getattr(card, f)
            if t is None or len(t) < 2:
                raise CardError(source, f, "model 'table' needs a list of at least 2 conductances")
            arr = np.asarray(t)
            d = np.diff(arr)
            if (inc and not np.all(d > 0)) or (not inc and not np.all(d < 0)):
                raise CardError(source, f, f"must be strictly {'increasing' if inc else 'decreasing'} "
                                "(conductance after each pulse)")
        p, dpr = card.potentiation, card.depression
        if not (math.isclose(p[0], card.g_min, rel_tol=1e-6) and math.isclose(p[-1], card.g_max, rel_tol=1e-6)
                and math.isclose(dpr[0], card.g_max, rel_tol=1e-6)
                and math.isclose(dpr[-1], card.g_min, rel_tol=1e-6)):
            raise CardError(source, "potentiation", "table curves must run from g_min to g_max "
                            "(potentiation) and from g_max to g_min (depression)")

    def _table(self, up: bool, like: torch.Tensor):
        """The curve (travel, pulse axis, intervals) on ``like``'s device and dtype: the family
        keeps its CPU copy, each device gets its own once (no copy per pulse)."""
        key = (up, like.device, like.dtype)
        hit = self._tables.get(key)
        if hit is None:
            tab, n_tab = (self._tab_up, self._n_up) if up else (self._tab_dn_v, self._n_dn)
            hit = self._tables[key] = (tab.to(like.device, like.dtype),
                                       torch.arange(n_tab + 1, dtype=like.dtype, device=like.device), n_tab)
        return hit

    def travel(self, q, pmax, shape, up: bool):
        tab, axis, n_tab = self._table(up, q)
        pos = (q * (n_tab / pmax)).clamp(0, n_tab)
        return interp(pos, axis, tab)

    def _position(self, v, pmax, shape, up: bool):
        tab, axis, n_tab = self._table(up, v)
        pos = interp(v, tab, axis)
        return pos * (pmax / n_tab)
