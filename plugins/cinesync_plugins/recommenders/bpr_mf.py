"""Matrix factorisation trained with Bayesian Personalized Ranking.

Rendle, Freudenthaler, Gantner & Schmidt-Thieme, "BPR: Bayesian Personalized Ranking from Implicit Feedback",
UAI 2009. Users and items get ``dim``-dimensional embeddings (and each item an optional bias); a user's score
for an item is their dot product. Training maximises ``log σ(s(u, i) - s(u, j))`` over observed pairs
``(u, i)`` and items ``j`` drawn uniformly from the catalogue, with an L2 penalty on the embeddings each batch
uses.
Needs user-item pairs only. With ``rating_head = true`` it is also a rating regressor on the same embeddings,
``r̂(u, i) = μ + b_u + b_i + p_u · q_i`` (Koren, Bell & Volinsky, "Matrix Factorization Techniques for
Recommender Systems", IEEE Computer 2009), trained with squared error on the interactions that have a rating:
a two-task model (ranking + rating) whose losses the trainer weighs (``training.tasks``, e.g. with learned
uncertainty weights). It then needs ratings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional

from cinesync.errors import DataError
from cinesync.interfaces import ComponentConfig
from cinesync.train.torch_model import TorchRecommender
from cinesync.train.trainer import TrainerConfig
from cinesync_plugins.layers import UniformNegativeSampling, bpr_loss

if TYPE_CHECKING:
    from cinesync.data.dataset import Dataset


class RatingHead(nn.Module):
    """The rating-specific terms of ``μ + b_u + b_i + p_u · q_i``: a global offset and user and item biases."""

    def __init__(self, n_users: int, n_items: int) -> None:
        super().__init__()
        self.offset = nn.Parameter(torch.zeros(()))
        self.user_bias = nn.Embedding(n_users, 1)
        self.item_bias = nn.Embedding(n_items, 1)
        nn.init.zeros_(self.user_bias.weight)
        nn.init.zeros_(self.item_bias.weight)


class MatrixFactorization(nn.Module):
    """User and item embedding tables, with an optional bias per item and an optional rating head."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int,
        item_bias: bool,
        init_std: float,
        rating_head: bool = False,
    ) -> None:
        super().__init__()
        self.users = nn.Embedding(n_users, dim)
        self.items = nn.Embedding(n_items, dim)
        self.item_bias = nn.Embedding(n_items, 1) if item_bias else None
        nn.init.normal_(self.users.weight, std=init_std)
        nn.init.normal_(self.items.weight, std=init_std)
        if self.item_bias is not None:
            nn.init.zeros_(self.item_bias.weight)
        self.rating = RatingHead(n_users, n_items) if rating_head else None

    def predicted_ratings(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``μ + b_u + b_i + p_u · q_i`` for each (user, item) pair; needs the rating head."""
        assert self.rating is not None
        head = self.rating
        dot = (self.users(users) * self.items(items)).sum(-1)
        return head.offset + head.user_bias(users).squeeze(-1) + head.item_bias(items).squeeze(-1) + dot

    def bias(self, items: torch.Tensor) -> torch.Tensor | float:
        """The bias of each of ``items`` (same shape), or 0 without item biases."""
        return 0.0 if self.item_bias is None else self.item_bias(items).squeeze(-1)

    def all_items(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of every item for ``users``: shape (len(users), n_items)."""
        scores = self.users(users) @ self.items.weight.t()
        if self.item_bias is not None:
            scores = scores + self.item_bias.weight.t()
        return scores


class BPRMF(UniformNegativeSampling, TorchRecommender):
    """Matrix factorisation with the BPR pairwise loss and uniform negative sampling (Rendle et al., 2009)."""

    class Config(ComponentConfig):
        # Chosen on ml-latest-small's validation split (docs/benchmarks.md): l2 1e-2 beat 3e-3 and 3e-2; 128
        # dimensions scored 0.0014 higher mean validation NDCG@10, well within its standard error (about
        # 0.005), at twice the training time, so the default stays at 64.
        dim: int = Field(64, ge=1, description="Embedding size.")
        item_bias: bool = Field(True, description="Learn a popularity bias per item.")
        negatives: int = Field(4, ge=1, description="Negative items sampled per observed pair.")
        l2: float = Field(1e-2, ge=0, description="L2 penalty on the embeddings a batch uses, per example.")
        init_std: float = Field(0.1, gt=0, description="Standard deviation of the initial embeddings.")
        rating_head: bool = Field(
            False, description="Also predict ratings from the same embeddings: a second task, 'rating'."
        )

    config: Config
    #: Metrics of the rating task that task_metric computes.
    rating_metrics: ClassVar[frozenset[str]] = frozenset({"rmse", "mae"})

    def default_trainer(self) -> TrainerConfig:
        # Chosen on ml-latest-small's validation split over seeds 0, 2 and 4 (docs/benchmarks.md): Adam at 1e-3
        # with batches of 256 had the best and least seed-dependent validation NDCG@10 of the optimisers tried
        # (Adagrad at 0.05 with batches of 1024 stopped after one epoch on one seed). Validation is noisy with
        # a few hundred users, so patience is 10 evaluations.
        return TrainerConfig(epochs=100, batch_size=256, learning_rate=1e-3, optimizer="adam", patience=10)

    def build_module(self, n_users: int, n_items: int) -> MatrixFactorization:
        config = self.config
        return MatrixFactorization(
            n_users, n_items, config.dim, config.item_bias, config.init_std, config.rating_head
        )

    @property
    def factorization(self) -> MatrixFactorization:
        module = self.trained_module
        assert isinstance(module, MatrixFactorization)
        return module

    def training_examples(self, dataset: Dataset) -> dict[str, torch.Tensor]:
        """Every distinct (user, item) pair once; with the rating head also its mean rating (NaN if unrated)."""
        examples = super().training_examples(dataset)
        if self.config.rating_head:
            examples["ratings"] = torch.tensor(
                pair_ratings(dataset, examples["users"].numpy(), examples["items"].numpy())
            )
        return examples

    def collate(
        self, examples: dict[str, torch.Tensor], generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """The pairs with ``negatives`` uniform random items each, and their ratings for the rating head."""
        batch = super().collate(examples, generator)
        if "ratings" in examples:
            batch["ratings"] = examples["ratings"]
        return batch

    def task_heads(self) -> dict[str, str]:
        return {"ranking": "bpr", "rating": "mse"} if self.config.rating_head else {"ranking": "bpr"}

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | dict[str, torch.Tensor]:
        """Mean ``-log σ(s(u, i) - s(u, j))`` over the batch's pairs and negatives, plus the L2 penalty.

        With the rating head: ``{"ranking": that, "rating": mean squared error on the rated pairs}``.
        """
        factors = self.factorization
        users = factors.users(batch["users"])
        positives = factors.items(batch["positives"])
        negatives = factors.items(batch["negatives"])
        positive_scores = (users * positives).sum(-1) + factors.bias(batch["positives"])
        negative_scores = (users.unsqueeze(1) * negatives).sum(-1) + factors.bias(batch["negatives"])
        ranking = bpr_loss(positive_scores, negative_scores)
        penalty = (
            users.pow(2).sum() + positives.pow(2).sum() + negatives.pow(2).sum() / negatives.shape[1]
        ) / len(users)
        ranking_loss = ranking + self.config.l2 * penalty
        if factors.rating is None:
            return ranking_loss
        rated = ~torch.isnan(batch["ratings"])
        predicted = factors.predicted_ratings(batch["users"][rated], batch["positives"][rated])
        # The sum over no rated pairs is a zero that still has a gradient path, so every batch backpropagates.
        errors = (predicted - batch["ratings"][rated]).pow(2)
        rating_loss = errors.sum() / rated.sum().clamp(min=1)
        return {"ranking": ranking_loss, "rating": rating_loss}

    def example_losses(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The BPR loss of each pair (mean over its negatives), without the penalty."""
        factors = self.factorization
        users = factors.users(batch["users"])
        positive_scores = (users * factors.items(batch["positives"])).sum(-1) + factors.bias(
            batch["positives"]
        )
        negative_scores = (users.unsqueeze(1) * factors.items(batch["negatives"])).sum(-1) + factors.bias(
            batch["negatives"]
        )
        return -functional.logsigmoid(positive_scores.unsqueeze(1) - negative_scores).mean(1)

    def task_metric(self, task: str, metric: str, dataset: Dataset) -> float | None:
        """RMSE or MAE of the predicted ratings on ``dataset``'s rated interactions (task ``rating``).

        The evaluator's ``rmse`` would read ``score``, which ranks; the rating head's predictions are these.
        """
        if task != "rating" or metric not in self.rating_metrics or self.factorization.rating is None:
            return super().task_metric(task, metric, dataset)
        frame = dataset.interactions.dropna(subset=["rating"])
        users = torch.tensor(frame["user"].to_numpy(np.int64)).to(self.device)
        items = torch.tensor(frame["item"].to_numpy(np.int64)).to(self.device)
        ratings = torch.tensor(frame["rating"].to_numpy(np.float32)).to(self.device)
        with torch.no_grad():
            errors = self.factorization.predicted_ratings(users, items).float() - ratings
        value = errors.pow(2).mean().sqrt() if metric == "rmse" else errors.abs().mean()
        return float(value)

    def score(
        self, users: torch.Tensor, items: torch.Tensor | None = None, context: Any = None
    ) -> torch.Tensor:
        scores = self.factorization.all_items(users.to(self.device))
        return (scores if items is None else scores[:, items.to(self.device)]).float().cpu()


def pair_ratings(dataset: Dataset, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """The mean rating of each (user, item) pair in ``dataset`` (float32, NaN where it has none)."""
    rated = dataset.interactions.dropna(subset=["rating"])
    if rated.empty:
        raise DataError(
            f"BPRMF with rating_head = true needs ratings, and dataset {dataset.name!r} has none; "
            "turn the rating head off or load a dataset with ratings"
        )
    means = rated.groupby(["user", "item"])["rating"].mean()
    keys = pd.MultiIndex.from_arrays([users, items])
    return means.reindex(keys).to_numpy(np.float32)
