"""Click-through rate of recommended items, from logged outcomes."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from cinesync.evaluation.ranking import RankedLists
from cinesync.interfaces import Metric
from cinesync_plugins.metrics._outcomes import logged_outcomes
from cinesync_plugins.metrics._ranking import CutoffConfig, per_row_mean


class CTR(Metric):
    """CTR@k: the share of a user's logged impressions of their top-k items that were clicked.

    ``CTR@k(u) = |{e ∈ O_u : clicked(e)}| / |O_u|``, with ``O_u`` the outcome-log rows of user u whose item is
    in their top k (every logged impression counts). Users with no such row are not judged (NaN). An
    offline, logged estimate: items the log never showed cannot count. Source: Jannach & Jugovac, "Measuring
    the business value of recommender systems", ACM TMIS 10(4), 2019, §3.
    """

    metric_id: ClassVar[str] = "ctr"
    needs: ClassVar[frozenset[str]] = frozenset({"outcomes"})

    class Config(CutoffConfig):
        """CTR at ``k``."""

    def compute(self, lists: RankedLists, context: dict[str, Any]) -> torch.Tensor:
        log = logged_outcomes(lists, self.config.k, context["outcomes"])
        matched = log.matches
        return per_row_mean(log.positions[matched], log.clicked[matched].double(), len(lists.users))
