"""Bias baseline: a global mean plus regularised user and item biases, predicting ratings.

Yehuda Koren, "Factor in the neighbors: scalable and accurate collaborative filtering", ACM TKDD 4(1), 2010,
§2.1. The predicted rating is ``r̂_ui = μ + b_u + b_i`` with ``μ`` the mean training rating; the biases
minimise ``Σ (r_ui − μ − b_u − b_i)² + λ_u Σ b_u² + λ_i Σ b_i²`` by alternating closed-form updates, item
biases first (Koren's eq. 2 decoupled):

    b_i = Σ_{u∈R(i)} (r_ui − μ − b_u) / (λ_i + |R(i)|),    b_u = Σ_{i∈R(u)} (r_ui − μ − b_i) / (λ_u + |R(u)|)

Needs a rating on every interaction; every interaction is one observation (repeated ratings included). Its
scores are predicted ratings (``predicts_ratings``), so rating-error metrics (rmse, mae) apply to it; as a
ranker it orders every user's items by item bias.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from pydantic import Field

from cinesync.interfaces import ComponentConfig, Recommender

if TYPE_CHECKING:
    from cinesync.data.dataset import Dataset
    from cinesync.train.trainer import TrainerConfig


class BiasBaseline(Recommender):
    """Predicts ``μ + b_u + b_i`` (Koren 2010): the rating baseline every rating predictor must beat."""

    requires: ClassVar[frozenset[str]] = frozenset({"ratings"})
    predicts_ratings: ClassVar[bool] = True

    class Config(ComponentConfig):
        item_l2: float = Field(25.0, ge=0, description="shrinkage λ_i of item biases towards 0 (Koren: 25)")
        user_l2: float = Field(10.0, ge=0, description="shrinkage λ_u of user biases towards 0 (Koren: 10)")
        iterations: int = Field(3, gt=0, description="rounds of alternating item then user bias updates")

    config: Config

    def __init__(self, config: ComponentConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.global_mean: torch.Tensor | None = None
        self.user_bias: torch.Tensor | None = None
        self.item_bias: torch.Tensor | None = None

    def _fit(self, dataset: Dataset, *, validation: Dataset | None, trainer: TrainerConfig | None) -> None:
        frame = dataset.interactions
        users = torch.from_numpy(frame["user"].to_numpy(np.int64, copy=True))
        items = torch.from_numpy(frame["item"].to_numpy(np.int64, copy=True))
        ratings = torch.from_numpy(frame["rating"].to_numpy(np.float64, copy=True))
        mean = ratings.mean()
        residual = ratings - mean
        user_count = torch.bincount(users, minlength=dataset.n_users).double()
        item_count = torch.bincount(items, minlength=dataset.n_items).double()
        user_bias = torch.zeros(dataset.n_users, dtype=torch.float64)
        item_bias = torch.zeros(dataset.n_items, dtype=torch.float64)
        for _ in range(self.config.iterations):
            item_sum = torch.zeros_like(item_bias).index_add_(0, items, residual - user_bias[users])
            item_bias = item_sum / (self.config.item_l2 + item_count).clamp(min=1e-12)
            user_sum = torch.zeros_like(user_bias).index_add_(0, users, residual - item_bias[items])
            user_bias = user_sum / (self.config.user_l2 + user_count).clamp(min=1e-12)
        self.global_mean = mean.float().reshape(1)
        self.user_bias, self.item_bias = user_bias.float(), item_bias.float()

    def score(
        self, users: torch.Tensor, items: torch.Tensor | None = None, context: Any = None
    ) -> torch.Tensor:
        self._check_fitted()
        assert self.global_mean is not None and self.user_bias is not None and self.item_bias is not None
        item_bias = self.item_bias if items is None else self.item_bias[items]
        return self.global_mean + self.user_bias[users].unsqueeze(1) + item_bias.unsqueeze(0)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        self._check_fitted()
        assert self.global_mean is not None and self.user_bias is not None and self.item_bias is not None
        return {"global_mean": self.global_mean, "user_bias": self.user_bias, "item_bias": self.item_bias}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.global_mean = tensors["global_mean"].float()
        self.user_bias = tensors["user_bias"].float()
        self.item_bias = tensors["item_bias"].float()
