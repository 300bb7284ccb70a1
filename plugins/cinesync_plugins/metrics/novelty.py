"""Novelty: the mean self-information of recommended items."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from cinesync.evaluation.ranking import RankedLists
from cinesync.interfaces import Metric
from cinesync_plugins.metrics._ranking import CutoffConfig, item_values, list_mean


class Novelty(Metric):
    """Novelty@k: how unfamiliar the recommended items are, as the mean self-information of the top k.

    ``Novelty@k(u) = (1 / |L_u|) Σ_{i∈L_u} −log2(|U_i| / |U|)``, with ``|U_i|`` the number of training users
    of item i (at least 1, so that an item nobody has seen is as novel as one seen once) and ``|U|`` the
    number of training users. An empty list is not judged (NaN). Source: Zhou, Kuscsik, Liu, Medo, Wakeling
    & Zhang, "Solving the apparent diversity-accuracy dilemma of recommender systems", PNAS 107(10), 2010;
    Vargas & Castells, RecSys 2011 (Elliot ``EPC``-family self-information novelty).
    """

    metric_id: ClassVar[str] = "novelty"
    needs: ClassVar[frozenset[str]] = frozenset({"item_users", "n_users"})

    class Config(CutoffConfig):
        """Novelty at ``k``."""

    def compute(self, lists: RankedLists, context: dict[str, Any]) -> torch.Tensor:
        users_per_item = context["item_users"].double().clamp(min=1)
        information = -torch.log2(users_per_item / context["n_users"])
        items = lists.items_at(self.config.k)
        return list_mean(item_values(information, items), items)
