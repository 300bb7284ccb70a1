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
