"""Hit rate at k."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from cinesync.evaluation.ranking import RankedLists
from cinesync.interfaces import Metric
from cinesync_plugins.metrics._ranking import CutoffConfig


class HitRate(Metric):
    """HR@k: 1 when any of the user's held-out items is in the top k, else 0.

    ``HR@k(u) = 1[ |top_k(u) ∩ rel(u)| > 0 ]``, averaged over users. Source: Deshpande & Karypis, "Item-based
    top-N recommendation algorithms", ACM TOIS 22(1), 2004 (as ``hit`` in RecBole).
    """

    metric_id: ClassVar[str] = "hr"

    class Config(CutoffConfig):
        """Hit rate at ``k``."""

    def compute(self, lists: RankedLists, context: dict[str, Any]) -> torch.Tensor:
        return lists.hits_at(self.config.k).amax(1)
