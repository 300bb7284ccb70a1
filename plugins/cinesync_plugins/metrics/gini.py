"""Gini index of item exposure in the top-k lists."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from cinesync.evaluation.ranking import RankedLists
from cinesync.interfaces import Metric
from cinesync_plugins.metrics._ranking import CutoffConfig, exposure


class Gini(Metric):
    """Gini@k: the inequality of exposure over the whole catalogue; 0 is even, 1 all on one item.

    With ``p_(1) <= ... <= p_(n)`` the items' exposure shares (``p_i = c_i / Σ_j c_j``, ``c_i`` the number of
    top-k lists holding item i, items never shown included) over ``n = |I|`` items,
    ``Gini@k = (1 / (n − 1)) Σ_{j=1..n} (2j − n − 1) · p_(j)``. Catalogue-level, lower is better. Source:
    Vargas & Castells, "Rank and relevance in novelty and diversity metrics for recommender systems",
    RecSys 2011 (the Gini index as in Elliot ``Gini``).
    """

    metric_id: ClassVar[str] = "gini"
    per_user: ClassVar[bool] = False
    higher_is_better: ClassVar[bool] = False

    class Config(CutoffConfig):
        """Gini index at ``k``."""

    def compute(self, lists: RankedLists, context: dict[str, Any]) -> torch.Tensor:
        n = lists.n_items
        counts = exposure(lists.items_at(self.config.k), n).double()
        shares = torch.sort(counts / counts.sum()).values
        weights = 2 * torch.arange(1, n + 1, dtype=torch.float64) - n - 1
        return ((weights * shares).sum() / max(n - 1, 1)).float()
