"""Normalised discounted cumulative gain at k."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from cinesync.evaluation.ranking import RankedLists
from cinesync.interfaces import Metric
from cinesync_plugins.metrics._ranking import CutoffConfig, discounts, ideal_dcg


class NDCG(Metric):
    """NDCG@k with binary gains.

    ``DCG@k(u) = Σ_{j=1..k} rel_j / log2(j + 1)`` and ``NDCG@k(u) = DCG@k(u) / IDCG@k(u)``, where the ideal
    ranking puts ``min(|rel(u)|, k)`` relevant items first: ``IDCG@k(u) = Σ_{j=1..min(|rel(u)|, k)} 1 /
    log2(j + 1)``. Source: Järvelin & Kekäläinen, "Cumulated gain-based evaluation of IR techniques", ACM TOIS
    20(4), 2002 (RecBole ``ndcg``).
    """

    metric_id: ClassVar[str] = "ndcg"

    class Config(CutoffConfig):
        """NDCG at ``k``."""

    def compute(self, lists: RankedLists, context: dict[str, Any]) -> torch.Tensor:
        k = self.config.k
        hits = lists.hits_at(k)
        dcg = (hits * discounts(hits.shape[1])).sum(1)
        return dcg / ideal_dcg(lists.n_relevant, k)
