"""Watch time of recommended items, from logged outcomes."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from cinesync.evaluation.ranking import RankedLists
from cinesync.interfaces import Metric
from cinesync_plugins.metrics._outcomes import logged_outcomes
from cinesync_plugins.metrics._ranking import CutoffConfig, per_row_mean


class WatchTime(Metric):
    """Watch time@k: the mean seconds watched per logged impression of a user's top-k items.

    ``WT@k(u) = (1 / |O_u|) Σ_{e∈O_u} watch_seconds(e)``, with ``O_u`` the outcome-log rows of user u whose
    item is in their top k; an impression that was not clicked counts 0 seconds, so the value combines
    clicking and watching. Users with no such row are not judged (NaN). Source: Jannach & Jugovac,
    "Measuring the business value of recommender systems", ACM TMIS 10(4), 2019, §3 (engagement metrics);
    Covington, Adams & Sargin, "Deep neural networks for YouTube recommendations", RecSys 2016 (expected
    watch time per impression).
    """

    metric_id: ClassVar[str] = "watch_time"
    needs: ClassVar[frozenset[str]] = frozenset({"outcomes"})

    class Config(CutoffConfig):
        """Watch time at ``k``."""

    def compute(self, lists: RankedLists, context: dict[str, Any]) -> torch.Tensor:
        log = logged_outcomes(lists, self.config.k, context["outcomes"])
        matched = log.matches
        return per_row_mean(log.positions[matched], log.watch_seconds[matched], len(lists.users))
