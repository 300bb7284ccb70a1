"""Recall at k."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from cinesync.evaluation.ranking import RankedLists
from cinesync.interfaces import Metric
from cinesync_plugins.metrics._ranking import CutoffConfig


class Recall(Metric):
    """Recall@k: the share of the user's held-out items found in the top k.

    ``R@k(u) = |top_k(u) ∩ rel(u)| / |rel(u)|``. The denominator is ``|rel(u)|``, not ``min(|rel(u)|, k)``,
    as in RecBole's ``recall`` (Zhao et al., "RecBole", CIKM 2021), so a user with more than k held-out items
    cannot reach 1. Source: Manning, Raghavan & Schütze, "Introduction to Information Retrieval", 2008, §8.3.
    """

    metric_id: ClassVar[str] = "recall"

    class Config(CutoffConfig):
        """Recall at ``k``."""

    def compute(self, lists: RankedLists, context: dict[str, Any]) -> torch.Tensor:
        return lists.hits_at(self.config.k).sum(1) / lists.n_relevant.float()
