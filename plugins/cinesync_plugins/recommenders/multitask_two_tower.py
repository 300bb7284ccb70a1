"""Multi-task two-tower model: shared user and item towers with ranking, rating and genre heads.

The towers of ``two_tower`` (Yi et al., "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
Recommendations", RecSys 2019) shared by three tasks, the hard parameter sharing of multi-task learning
(Caruana, "Multitask Learning", Machine Learning 1997; in recommendation e.g. Zhao et al., "Recommending What
Video to Watch Next: A Multitask Ranking System", RecSys 2019):

* ``ranking``: the log-q corrected in-batch softmax of ``two_tower`` on the unit-norm tower outputs ``u``, ``v``;
  ``score`` ranks with this head alone, ``u · v / τ``;
* ``rating``: ``r̂(u, i) = μ + b_u + b_i + w · (u ⊙ v)``, squared error on the batch's pairs that have a rating
  (the biased factorisation of Koren, Bell & Volinsky, IEEE Computer 2009, over the tower outputs);
* ``genre``: a linear layer from the item tower's output ``v`` to the item's catalogue genres, multi-label log
  loss.

``loss`` returns ``{"ranking": ..., "rating": ..., "genre": ...}`` and the trainer weighs them
(``training.tasks``; the defaults are fixed weights chosen on validation). ``task_metric`` gives the rating
head's RMSE and MAE. With ``item_features = false`` the item tower reads the item id alone, so the genre head
must learn the genres into the id embeddings instead of reading them from the input. Needs item genres and
ratings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional

from cinesync.train.trainer import TaskConfig, TrainerConfig
from cinesync_plugins.recommenders._two_tower import IdFeatureTowers, TwoTowerConfig, TwoTowerRecommender
from cinesync_plugins.recommenders.bpr_mf import pair_ratings

if TYPE_CHECKING:
    from cinesync.data.dataset import Dataset


class MultitaskTowers(IdFeatureTowers):
    """``two_tower``'s towers plus a rating head (offset, user and item biases, weights on ``u ⊙ v``) and a
    genre head (linear, on ``v``)."""

    def __init__(
        self, item_features: torch.Tensor, user_history: torch.Tensor, config: MultitaskTwoTower.Config
    ) -> None:
        super().__init__(item_features, user_history, config, read_features=config.item_features)
        out = config.layers[-1]
        self.rating_offset = nn.Parameter(torch.zeros(()))
        self.user_bias = nn.Embedding(self.n_users, 1)
        self.item_bias = nn.Embedding(self.n_items, 1)
        nn.init.zeros_(self.user_bias.weight)
        nn.init.zeros_(self.item_bias.weight)
        self.rating_weights = nn.Linear(out, 1, bias=False)
        self.genre_head = nn.Linear(out, self.n_features)

    def predicted_ratings(
        self, users: torch.Tensor, items: torch.Tensor, user_vectors: torch.Tensor, item_vectors: torch.Tensor
    ) -> torch.Tensor:
        """``μ + b_u + b_i + w · (u ⊙ v)`` of each (user, item) pair, from the pairs' unit-norm tower outputs."""
        interaction = self.rating_weights(user_vectors * item_vectors).squeeze(-1)
        biases = self.user_bias(users).squeeze(-1) + self.item_bias(items).squeeze(-1)
        return self.rating_offset + biases + interaction

    def genre_loss(self, items: torch.Tensor, item_vectors: torch.Tensor) -> torch.Tensor:
        """Mean multi-label log loss of the genre head on ``items``, from their unit-norm tower outputs."""
        logits = self.genre_head(item_vectors)
        return functional.binary_cross_entropy_with_logits(logits, self.item_features[items])


class MultitaskTwoTower(TwoTowerRecommender):
    """Shared towers with three heads: ranking (in-batch softmax), rating (MSE) and genre (BCE).

    ``score`` ranks with the ranking head: ``user_embeddings @ item_embeddings.T / temperature``.
    """

    requires: ClassVar[frozenset[str]] = frozenset({"item_genres", "ratings"})
    #: Metrics of the rating task that task_metric computes.
    rating_metrics: ClassVar[frozenset[str]] = frozenset({"rmse", "mae"})

    class Config(TwoTowerConfig):
        item_features: bool = Field(
            True, description="The item tower reads the item's genres (false: its id alone)."
        )

    config: Config
    #: The rating head's initial offset (the training data's mean rating), set by fit.
    initial_rating: float = 0.0

    def default_trainer(self) -> TrainerConfig:
        # Fixed task weights: learned uncertainty weights would follow each loss's scale, and the genre loss
        # (about 0.2) is far smaller than the softmax over a batch (about 6), so it would take over. On ml-100k's
        # validation split, weights 0.3 for rating and genre scored 0.0841 NDCG@10 and 0.1 scored 0.0838 (with
        # the item features; without them 0.0818 and 0.0732); two_tower alone scored 0.0815 at the same settings.
        return TrainerConfig(
            epochs=40,
            batch_size=1024,
            learning_rate=1e-3,
            optimizer="adam",
            patience=5,
            tasks=[
                TaskConfig(name="ranking", loss="softmax", weight=1.0),
                TaskConfig(name="rating", loss="mse", weight=0.3),
                TaskConfig(name="genre", loss="bce", weight=0.3),
            ],
        )

    def _fit(self, dataset: Dataset, *, validation: Dataset | None, trainer: TrainerConfig | None) -> None:
        # The rating offset starts at the mean rating: from 0, Adam's steps of about the learning rate would
        # take thousands of steps to reach a 1-5 scale. A loaded model's offset comes from its weights.
        self.initial_rating = float(dataset.interactions["rating"].mean())
        super()._fit(dataset, validation=validation, trainer=trainer)

    def build_module(self, n_users: int, n_items: int) -> MultitaskTowers:
        towers = MultitaskTowers(*self.fitted_inputs(), self.config)
        with torch.no_grad():
            towers.rating_offset.fill_(self.initial_rating)
        return towers

    @property
    def towers(self) -> MultitaskTowers:
        module = self.trained_module
        assert isinstance(module, MultitaskTowers)
        return module

    def task_heads(self) -> dict[str, str]:
        return {"ranking": "softmax", "rating": "mse", "genre": "bce"}

    def training_examples(self, dataset: Dataset) -> dict[str, torch.Tensor]:
        """Every distinct (user, item) pair once, with its mean rating (NaN if unrated)."""
        examples = super().training_examples(dataset)
        examples["ratings"] = torch.tensor(
            pair_ratings(dataset, examples["users"].numpy(), examples["items"].numpy())
        )
        return examples

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{"ranking": in-batch softmax, "rating": MSE on the rated pairs, "genre": BCE on the positives}``."""
        ranking, user_vectors, item_vectors = self.ranking_loss(batch)
        towers = self.towers
        rated = ~torch.isnan(batch["ratings"])
        predicted = towers.predicted_ratings(
            batch["users"][rated], batch["items"][rated], user_vectors[rated], item_vectors[rated]
        )
        # The sum over no rated pairs is a zero that still has a gradient path, so every batch backpropagates.
        rating = (predicted - batch["ratings"][rated]).pow(2).sum() / rated.sum().clamp(min=1)
        return {
            "ranking": ranking,
            "rating": rating,
            "genre": towers.genre_loss(batch["items"], item_vectors),
        }

    def predict_ratings(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The rating head's prediction for each (user, item) pair of index tensors: ``(len(users),)`` on CPU."""
        towers = self.towers
        users, items = users.to(self.device), items.to(self.device)
        with torch.no_grad():
            predicted = towers.predicted_ratings(
                users, items, towers.user_embeddings(users), towers.item_embeddings(items)
            )
        return predicted.float().cpu()

    def task_metric(self, task: str, metric: str, dataset: Dataset) -> float | None:
        """RMSE or MAE of the rating head on ``dataset``'s rated interactions (task ``rating``)."""
        if task != "rating" or metric not in self.rating_metrics:
            return super().task_metric(task, metric, dataset)
        frame = dataset.interactions.dropna(subset=["rating"])
        errors = self.predict_ratings(
            torch.tensor(frame["user"].to_numpy(np.int64)),
            torch.tensor(frame["item"].to_numpy(np.int64)),
        ) - torch.tensor(frame["rating"].to_numpy(np.float32))
        value = errors.pow(2).mean().sqrt() if metric == "rmse" else errors.abs().mean()
        return float(value)
