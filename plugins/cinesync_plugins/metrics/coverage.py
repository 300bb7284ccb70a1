"""Catalogue coverage at k."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from cinesync.evaluation.ranking import RankedLists
from cinesync.interfaces import Metric
from cinesync_plugins.metrics._ranking import CutoffConfig


class Coverage(Metric):
    """Coverage@k: the share of the catalogue recommended to at least one evaluated user.

    ``Coverage@k = |∪_u top_k(u)| / |I|``, a catalogue-level value (``per_user = False``). Source: Ge,
    Delgado-Battenfeld & Jannach, "Beyond accuracy: evaluating recommender systems by coverage and
    serendipity", RecSys 2010 (RecBole ``itemcoverage``).
    """

    metric_id: ClassVar[str] = "coverage"
    per_user: ClassVar[bool] = False

    class Config(CutoffConfig):
        """Coverage at ``k``."""

    def compute(self, lists: RankedLists, context: dict[str, Any]) -> torch.Tensor:
        items = lists.items_at(self.config.k)
        recommended = torch.zeros(lists.n_items, dtype=torch.bool)
        recommended[items[items >= 0]] = True
        return recommended.float().mean()
