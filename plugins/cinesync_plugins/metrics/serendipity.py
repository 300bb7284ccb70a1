"""Serendipity: relevant recommendations a popularity baseline would not have made."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from cinesync.evaluation.ranking import ScoredBatch
from cinesync_plugins.metrics._ranking import CutoffConfig
from cinesync_plugins.metrics._scores import ScoreRowMetric


class Serendipity(ScoreRowMetric):
    """Serendipity@k: the share of the top k that is both relevant and unexpected.

    ``Serendipity@k(u) = |{i ∈ top_k(u) : i ∈ rel(u), i ∉ PM_N(u)}| / k``, where the primitive, obvious
    recommender ``PM_N(u)`` lists the ``N = baseline_top`` most popular training items the user has not
    interacted with (ties by item index). As for precision, empty positions count as misses. It reads the
    user's history, so the evaluator passes it score rows. Source: Ge, Delgado-Battenfeld & Jannach, "Beyond
    accuracy: evaluating recommender systems by coverage and serendipity", RecSys 2010; Kaminskas & Bridge,
    "Diversity, serendipity, novelty, and coverage", ACM TiiS 7(1), 2016, §4.
    """

    metric_id: ClassVar[str] = "serendipity"
    needs: ClassVar[frozenset[str]] = frozenset({"item_counts"})

    class Config(CutoffConfig):
        """Serendipity at ``k`` against a most-popular baseline of ``baseline_top`` items."""

        baseline_top: int = Field(100, gt=0, description="length N of the popularity baseline's list")

    def compute_batch(self, batch: ScoredBatch, context: dict[str, Any]) -> torch.Tensor:
        counts = context["item_counts"].long()
        n_items = len(counts)
        # One integer key orders by count, then by lower item index, so the baseline has no ties.
        key = counts * n_items + torch.arange(n_items - 1, -1, -1)
        keys = key.expand(len(batch.users), -1).masked_fill(batch.excluded, -1)
        top = torch.topk(keys, min(self.config.baseline_top, n_items), dim=1)
        obvious = torch.zeros_like(batch.excluded)
        obvious.scatter_(1, top.indices, top.values >= 0)
        items = batch.lists.items_at(self.config.k)
        hits = batch.lists.hits_at(self.config.k).bool()
        unexpected = ~obvious.gather(1, items.clamp(min=0))
        return (hits & unexpected).sum(1).float() / self.config.k
