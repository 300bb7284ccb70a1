"""Shannon entropy of item exposure in the top-k lists."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from pydantic import Field

from cinesync.evaluation.ranking import RankedLists
from cinesync.interfaces import Metric
from cinesync_plugins.metrics._ranking import CutoffConfig, exposure


class Entropy(Metric):
    """Entropy@k: how evenly the top-k lists spread exposure over the catalogue (distributional coverage).

    With ``c_i`` the number of top-k lists that hold item i and ``p_i = c_i / Σ_j c_j``,
    ``H@k = −Σ_i p_i · ln p_i``; normalised (the default) it is divided by ``ln |I|``, its value when every
    item is shown equally often, so it lies in [0, 1]. Catalogue-level. Source: Shani & Gunawardana,
    "Evaluating recommendation systems", Recommender Systems Handbook, 2011, §8.3.3 (Elliot ``SEntropy``,
    RecBole ``shannonentropy``).
    """

    metric_id: ClassVar[str] = "entropy"
    per_user: ClassVar[bool] = False

    class Config(CutoffConfig):
        """Entropy at ``k``, optionally normalised by its maximum ``ln |I|``."""

        normalised: bool = Field(
            True, description="divide by ln(n_items), so that 1 is perfectly even exposure"
        )

    def compute(self, lists: RankedLists, context: dict[str, Any]) -> torch.Tensor:
        counts = exposure(lists.items_at(self.config.k), lists.n_items).double()
        shares = counts / counts.sum()
        entropy = -torch.special.xlogy(shares, shares).sum()
        if self.config.normalised:
            entropy = entropy / math.log(lists.n_items)
        return entropy.float()
