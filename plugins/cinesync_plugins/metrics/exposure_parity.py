"""Exposure parity between groups of items (providers, types, genres)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from cinesync.errors import CineSyncError
from cinesync.evaluation.ranking import RankedLists
from cinesync.interfaces import Metric
from cinesync_plugins.metrics._ranking import CutoffConfig, exposure


class ExposureParity(Metric):
    """Exposure parity@k: the largest gap between a group's share of exposure and its share of the catalogue.

    Items are grouped by the catalogue column ``attribute`` (a missing value is a group of its own; in a
    list-valued column such as ``genres`` an item with m values belongs 1/m to each). With ``c_i`` the number
    of top-k lists holding item i, group a's exposure share is ``E_a = Σ_{i∈a} c_i / Σ_i c_i`` and its
    catalogue share ``C_a = |a| / |I|``; ``parity@k = max_a |E_a − C_a|``: 0 when every group is shown in
    proportion to its size. Catalogue-level, lower is better. Source: the disparate visibility of Gómez,
    Boratto & Salamó, "The winner takes it all: geographic imbalance and provider (un)fairness in educational
    recommender systems", SIGIR 2021 (provider fairness as in Elliot).
    """

    metric_id: ClassVar[str] = "exposure_parity"
    per_user: ClassVar[bool] = False
    higher_is_better: ClassVar[bool] = False
    needs: ClassVar[frozenset[str]] = frozenset({"catalog"})

    class Config(CutoffConfig):
        """Exposure parity at ``k`` over the groups of the catalogue column ``attribute``."""

        attribute: str = Field("type", min_length=1, description="catalogue column that groups items")

    def compute(self, lists: RankedLists, context: dict[str, Any]) -> torch.Tensor:
        items, groups, weights = self._memberships(context["catalog"])
        counts = exposure(lists.items_at(self.config.k), lists.n_items).double()
        n_groups = int(groups.max()) + 1
        exposed = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, groups, counts[items] * weights)
        size = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, groups, weights)
        gap = exposed / counts.sum() - size / lists.n_items
        return gap.abs().max().float()

    def _memberships(self, catalog: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(item, group, weight) rows: each item's groups, weights summing to 1 per item."""
        attribute = self.config.attribute
        if attribute not in catalog.columns:
            raise CineSyncError(
                f"metric {self.name}: the catalogue has no column {attribute!r}; "
                f"choose attribute from {sorted(map(str, catalog.columns))}"
            )
        # Lists become one row per value (an empty list one missing value), then rows are weighted 1/m.
        values = catalog[attribute].reset_index(drop=True).explode()
        items = values.index.to_numpy(np.int64, copy=True)
        groups, _ = pd.factorize(values.astype(object), use_na_sentinel=False)
        weights = 1.0 / np.bincount(items)[items]
        return torch.from_numpy(items), torch.from_numpy(groups.astype(np.int64)), torch.from_numpy(weights)
