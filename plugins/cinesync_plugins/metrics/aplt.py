"""Average percentage of long-tail items."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from cinesync.evaluation.ranking import RankedLists
from cinesync.interfaces import Metric
from cinesync_plugins.metrics._ranking import CutoffConfig, item_values, list_mean


def short_head(counts: torch.Tensor, head_share: float) -> torch.Tensor:
    """(n_items,) bool: the most popular items that together hold ``head_share`` of all interactions.

    Items are taken in order of decreasing count (ties by index) until their interactions reach
    ``head_share`` of the total: the smallest such prefix.
    """
    order = torch.sort(counts, descending=True, stable=True).indices
    sorted_counts = counts[order].double()
    before = torch.cumsum(sorted_counts, 0) - sorted_counts
    head = torch.zeros(len(counts), dtype=torch.bool)
    head[order] = before < head_share * sorted_counts.sum()
    return head


class APLT(Metric):
    """APLT@k: the share of each user's top k that lies in the long tail, averaged over users.

    ``APLT@k(u) = |{i ∈ L_u : i ∉ H}| / |L_u|``, with the short head ``H`` the most popular training items
    that together account for ``head_share`` (20 %) of the training interactions and the long tail every
    other item. An empty list is not judged (NaN). Source: Abdollahpouri, Burke & Mobasher, "Managing
    popularity bias in recommender systems with personalized re-ranking", FLAIRS 2019 (Elliot ``APLT``).
    """

    metric_id: ClassVar[str] = "aplt"
    needs: ClassVar[frozenset[str]] = frozenset({"item_counts"})

    class Config(CutoffConfig):
        """APLT at ``k`` with a short head holding ``head_share`` of the interactions."""

        head_share: float = Field(
            0.2, gt=0, lt=1, description="share of training interactions in the short head"
        )

    def compute(self, lists: RankedLists, context: dict[str, Any]) -> torch.Tensor:
        tail = ~short_head(context["item_counts"], self.config.head_share)
        items = lists.items_at(self.config.k)
        return list_mean(item_values(tail.double(), items), items)
