"""Average recommendation popularity."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from cinesync.evaluation.ranking import RankedLists
from cinesync.interfaces import Metric
from cinesync_plugins.metrics._ranking import CutoffConfig, item_values, list_mean


class ARP(Metric):
    """ARP@k: the mean training popularity of the items in each user's top k; lower is less popularity-biased.

    ``ARP@k(u) = (1 / |L_u|) Σ_{i∈L_u} φ(i)``, with ``φ(i)`` the number of training interactions of item i,
    averaged over users. An empty list is not judged (NaN). Source: Abdollahpouri, Burke & Mobasher,
    "Managing popularity bias in recommender systems with personalized re-ranking", FLAIRS 2019 (Elliot
    ``ARP``).
    """

    metric_id: ClassVar[str] = "arp"
    higher_is_better: ClassVar[bool] = False
    needs: ClassVar[frozenset[str]] = frozenset({"item_counts"})

    class Config(CutoffConfig):
        """ARP at ``k``."""

    def compute(self, lists: RankedLists, context: dict[str, Any]) -> torch.Tensor:
        items = lists.items_at(self.config.k)
        return list_mean(item_values(context["item_counts"].double(), items), items)
