"""Mean average precision at k."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from cinesync.evaluation.ranking import RankedLists
from cinesync.interfaces import Metric
from cinesync_plugins.metrics._ranking import CutoffConfig


class MAP(Metric):
    """MAP@k: average precision at the ranks of the hits, averaged over users.

    ``AP@k(u) = Σ_{j=1..k} P@j(u) · rel_j / min(|rel(u)|, k)``, with ``P@j`` the precision of the top j
    and ``rel_j`` 1 when position j holds a held-out item. Normalising by ``min(|rel(u)|, k)`` lets a perfect
    top k score 1. Source: Manning, Raghavan & Schütze, "Introduction to Information Retrieval", 2008,
    §8.4; the ``min(|rel|, k)`` normaliser as in RecBole ``map``.
    """

    metric_id: ClassVar[str] = "map"

    class Config(CutoffConfig):
        """MAP at ``k``."""

    def compute(self, lists: RankedLists, context: dict[str, Any]) -> torch.Tensor:
        k = self.config.k
        hits = lists.hits_at(k)
        positions = torch.arange(1, hits.shape[1] + 1, dtype=hits.dtype)
        precision_at = torch.cumsum(hits, 1) / positions
        return (precision_at * hits).sum(1) / lists.n_relevant.clamp(max=k).float()
