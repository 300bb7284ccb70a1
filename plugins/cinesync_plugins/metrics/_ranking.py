"""What the top-k metrics share: the cut-off config and the logarithmic position discount."""

from __future__ import annotations

import torch
from pydantic import Field

from cinesync.interfaces import ComponentConfig


class CutoffConfig(ComponentConfig):
    """A metric judged on each user's top ``k`` items."""

    k: int = Field(10, gt=0, description="cut-off: how many of the top-ranked items are judged")


def discounts(k: int) -> torch.Tensor:
    """(k,) position discounts ``1 / log2(j + 1)`` for 1-based positions ``j = 1..k``."""
    return 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float32))


def ideal_dcg(n_relevant: torch.Tensor, k: int) -> torch.Tensor:
    """(U,) ideal DCG at ``k`` with binary gains: the first ``min(n_relevant, k)`` discounts summed."""
    best = torch.cumsum(discounts(k), 0)
    return best[n_relevant.clamp(1, k).long() - 1]


def recommended(items: torch.Tensor) -> torch.Tensor:
    """(U, k) bool: the positions of ``items`` that hold an item rather than ``-1`` padding."""
    return items >= 0


def list_mean(values: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """(U,) mean of per-position ``values`` over each list's items, NaN for a list with no items.

    ``values`` and ``items`` are (U, k); padding positions are ignored, and an empty list has no mean, so
    the evaluator leaves its user out (NaN rule of :class:`cinesync.interfaces.Metric`).
    """
    present = recommended(items)
    total = torch.where(present, values.double(), 0.0).sum(1)
    return (total / present.sum(1)).float()


def item_values(per_item: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """(U, k) ``per_item[items]`` with padding positions read as item 0 (callers mask them)."""
    return per_item[items.clamp(min=0)]


def exposure(items: torch.Tensor, n_items: int) -> torch.Tensor:
    """(n_items,) float: how many of the lists ``items`` (U, k) recommend each item."""
    present = items[recommended(items)]
    return torch.bincount(present, minlength=n_items).float()


def per_row_mean(rows: torch.Tensor, values: torch.Tensor, n_rows: int) -> torch.Tensor:
    """(n_rows,) mean of ``values`` grouped by ``rows``; NaN for a row without values."""
    total = torch.zeros(n_rows, dtype=torch.float64).index_add_(0, rows, values.double())
    count = torch.bincount(rows, minlength=n_rows)
    return (total / count).float()
