"""Mean reciprocal rank, over the full ranking or at k."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from cinesync.evaluation.ranking import RankedLists
from cinesync.interfaces import ComponentConfig, Metric


class MRR(Metric):
    """MRR: the reciprocal rank of the user's best-ranked held-out item, averaged over users.

    ``RR(u) = 1 / rank(u)`` with ``rank(u)`` the 1-based rank of the first relevant item in the full ranking
    (``RankedLists.first_relevant_rank``); at a cut-off, ``RR@k(u) = 1 / rank(u)`` if ``rank(u) <= k`` else 0.
    Source: Voorhees, "The TREC-8 Question Answering Track Report", TREC 1999 (RecBole ``mrr`` at k).
    """

    metric_id: ClassVar[str] = "mrr"

    class Config(ComponentConfig):
        """MRR over the whole ranking (``k`` None) or at cut-off ``k``."""

        k: int | None = Field(None, gt=0, description="cut-off; None ranks the whole catalogue")

    def compute(self, lists: RankedLists, context: dict[str, Any]) -> torch.Tensor:
        rank = lists.first_relevant_rank.float()
        reciprocal = 1.0 / rank
        if self.config.k is None:
            return reciprocal
        return torch.where(rank <= self.config.k, reciprocal, torch.zeros_like(reciprocal))
