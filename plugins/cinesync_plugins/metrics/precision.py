"""Precision at k."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from cinesync.evaluation.ranking import RankedLists
from cinesync.interfaces import Metric
from cinesync_plugins.metrics._ranking import CutoffConfig


class Precision(Metric):
    """Precision@k: the share of the top k that is relevant.

    ``P@k(u) = |top_k(u) ∩ rel(u)| / k``; empty positions (fewer than k candidates) count as misses.
    Source: Manning, Raghavan & Schütze, "Introduction to Information Retrieval", 2008, §8.4 (RecBole
    ``precision``).
    """

    metric_id: ClassVar[str] = "precision"

    class Config(CutoffConfig):
        """Precision at ``k``."""

    def compute(self, lists: RankedLists, context: dict[str, Any]) -> torch.Tensor:
        return lists.hits_at(self.config.k).sum(1) / self.config.k
