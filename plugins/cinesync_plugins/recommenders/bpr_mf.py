"""Matrix factorisation trained with Bayesian Personalized Ranking.

Rendle, Freudenthaler, Gantner & Schmidt-Thieme, "BPR: Bayesian Personalized Ranking from Implicit Feedback",
UAI 2009. Users and items get ``dim``-dimensional embeddings (and each item an optional bias); a user's score
for an item is their dot product. Training maximises ``log σ(s(u, i) - s(u, j))`` over observed pairs
``(u, i)`` and items ``j`` drawn uniformly from the catalogue, with an L2 penalty on the embeddings each batch
uses.
Needs user-item pairs only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional

from cinesync.interfaces import ComponentConfig
from cinesync.train.torch_model import TorchRecommender
from cinesync.train.trainer import TrainerConfig

if TYPE_CHECKING:
    from cinesync.data.dataset import Dataset


class MatrixFactorization(nn.Module):
    """User and item embedding tables, with an optional bias per item."""

    def __init__(self, n_users: int, n_items: int, dim: int, item_bias: bool, init_std: float) -> None:
        super().__init__()
        self.users = nn.Embedding(n_users, dim)
        self.items = nn.Embedding(n_items, dim)
        self.item_bias = nn.Embedding(n_items, 1) if item_bias else None
        nn.init.normal_(self.users.weight, std=init_std)
        nn.init.normal_(self.items.weight, std=init_std)
        if self.item_bias is not None:
            nn.init.zeros_(self.item_bias.weight)

    def bias(self, items: torch.Tensor) -> torch.Tensor | float:
        """The bias of each of ``items`` (same shape), or 0 without item biases."""
        return 0.0 if self.item_bias is None else self.item_bias(items).squeeze(-1)

    def all_items(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of every item for ``users``: shape (len(users), n_items)."""
        scores = self.users(users) @ self.items.weight.t()
        if self.item_bias is not None:
            scores = scores + self.item_bias.weight.t()
        return scores


class BPRMF(TorchRecommender):
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

    config: Config

    def default_trainer(self) -> TrainerConfig:
        # Chosen on ml-latest-small's validation split over seeds 0, 2 and 4 (docs/benchmarks.md): Adam at 1e-3
        # with batches of 256 had the best and least seed-dependent validation NDCG@10 of the optimisers tried
        # (Adagrad at 0.05 with batches of 1024 stopped after one epoch on one seed). Validation is noisy with
        # a few hundred users, so patience is 10 evaluations.
        return TrainerConfig(epochs=100, batch_size=256, learning_rate=1e-3, optimizer="adam", patience=10)

    def build_module(self, n_users: int, n_items: int) -> MatrixFactorization:
        config = self.config
        return MatrixFactorization(n_users, n_items, config.dim, config.item_bias, config.init_std)

    @property
    def factorization(self) -> MatrixFactorization:
        module = self.trained_module
        assert isinstance(module, MatrixFactorization)
        return module

    def training_batches(
        self, dataset: Dataset, batch_size: int, generator: torch.Generator
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Every distinct (user, item) pair once, shuffled, each with ``negatives`` uniform random items.

        A sampled negative is occasionally one of the user's own items; at the densities of recommendation
        data that is rare enough that rejecting it is not worth a per-batch lookup.
        """
        indptr, indices, _ = dataset.csr()
        users = torch.repeat_interleave(torch.arange(dataset.n_users), torch.from_numpy(indptr).diff())
        items = torch.from_numpy(indices)
        order = torch.randperm(len(items), generator=generator)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            negatives = torch.randint(
                0, dataset.n_items, (len(batch), self.config.negatives), generator=generator
            )
            yield {"users": users[batch], "positives": items[batch], "negatives": negatives}

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean ``-log σ(s(u, i) - s(u, j))`` over the batch's pairs and negatives, plus the L2 penalty."""
        factors = self.factorization
        users = factors.users(batch["users"])
        positives = factors.items(batch["positives"])
        negatives = factors.items(batch["negatives"])
        positive_scores = (users * positives).sum(-1) + factors.bias(batch["positives"])
        negative_scores = (users.unsqueeze(1) * negatives).sum(-1) + factors.bias(batch["negatives"])
        ranking = -functional.logsigmoid(positive_scores.unsqueeze(1) - negative_scores).mean()
        penalty = (
            users.pow(2).sum() + positives.pow(2).sum() + negatives.pow(2).sum() / negatives.shape[1]
        ) / len(users)
        return ranking + self.config.l2 * penalty

    def score(
        self, users: torch.Tensor, items: torch.Tensor | None = None, context: Any = None
    ) -> torch.Tensor:
        scores = self.factorization.all_items(users.to(self.device))
        return (scores if items is None else scores[:, items.to(self.device)]).float().cpu()
