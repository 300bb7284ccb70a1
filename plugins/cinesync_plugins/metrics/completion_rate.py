"""Completion rate of recommended items, from logged outcomes."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from cinesync.evaluation.ranking import RankedLists
from cinesync.interfaces import Metric
from cinesync_plugins.metrics._outcomes import logged_outcomes
from cinesync_plugins.metrics._ranking import CutoffConfig, per_row_mean


class CompletionRate(Metric):
    """Completion rate@k: the share of a user's clicked top-k items that they watched to the end.

    ``CR@k(u) = |{e ∈ O_u : completed(e)}| / |{e ∈ O_u : clicked(e)}|``, with ``O_u`` the outcome-log rows of
    user u whose item is in their top k: completions per play, so it measures whether what was started was
    worth finishing. Users without a clicked such row are not judged (NaN). Source: Jannach & Jugovac,
    "Measuring the business value of recommender systems", ACM TMIS 10(4), 2019, §3 (engagement metrics).
    """

    metric_id: ClassVar[str] = "completion_rate"
    needs: ClassVar[frozenset[str]] = frozenset({"outcomes"})

    class Config(CutoffConfig):
        """Completion rate at ``k``."""

    def compute(self, lists: RankedLists, context: dict[str, Any]) -> torch.Tensor:
        log = logged_outcomes(lists, self.config.k, context["outcomes"])
        played = log.matches & log.clicked
        return per_row_mean(log.positions[played], log.completed[played].double(), len(lists.users))
