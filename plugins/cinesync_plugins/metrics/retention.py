"""Retention after a recommended click, from logged outcomes."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from cinesync.evaluation.ranking import RankedLists
from cinesync.interfaces import Metric
from cinesync_plugins.metrics._outcomes import logged_outcomes
from cinesync_plugins.metrics._ranking import CutoffConfig

_DAY = 86_400


class Retention(Metric):
    """Retention@k: whether a user who clicked a recommended item came back within ``days``.

    For a user with a clicked outcome-log row whose item is in their top k, let ``t₀`` be the earliest such
    click; ``Retention@k(u) = 1`` when the log holds another event of theirs (any item, clicked or not) with
    ``t₀ < t <= t₀ + days``, else 0. The mean over users is the share of recommended-and-clicked users
    retained; users without such a click are not judged (NaN). Source: the N-day retention of product
    analytics, as a recommender outcome in Jannach & Jugovac, "Measuring the business value of recommender
    systems", ACM TMIS 10(4), 2019, §3.
    """

    metric_id: ClassVar[str] = "retention"
    needs: ClassVar[frozenset[str]] = frozenset({"outcomes"})

    class Config(CutoffConfig):
        """Retention at ``k`` over a window of ``days`` after the first recommended click."""

        days: int = Field(7, gt=0, description="days after the first recommended click a return must fall in")

    def compute(self, lists: RankedLists, context: dict[str, Any]) -> torch.Tensor:
        log = logged_outcomes(lists, self.config.k, context["outcomes"])
        n_users = len(lists.users)
        clicks = log.matches & log.clicked
        never = torch.iinfo(torch.int64).max
        first_click = torch.full((n_users,), never, dtype=torch.int64).scatter_reduce(
            0, log.positions[clicks], log.timestamp[clicks], reduce="amin"
        )
        start = first_click[log.positions]
        # Differences, not start + window: the sentinel start of users without a click must not overflow.
        returned = (log.timestamp > start) & (log.timestamp - start <= self.config.days * _DAY)
        retained = torch.zeros(n_users, dtype=torch.bool).index_fill_(0, log.positions[returned], True)
        return torch.where(first_click < never, retained.float(), torch.nan)
