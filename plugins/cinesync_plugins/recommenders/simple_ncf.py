"""Simple NCF: the user and item embeddings concatenated and fed to an MLP that outputs the score.

The MLP branch of He, Liao, Zhang, Nie, Hu & Chua, "Neural Collaborative Filtering", WWW 2017 on its own (their
"MLP" model), with an item bias added to the output: ``s(u, i) = w · MLP([p_u ; q_i]) + b_i``. It is the
plainest neural alternative to matrix factorisation; Rendle, Krichene, Zhang & Anderson, "Neural Collaborative
Filtering vs. Matrix Factorization Revisited", RecSys 2020, show that such an MLP learns a dot product only
with difficulty, so expect it below MF-style models. Trained with BPR, the sampled softmax or the pointwise log
loss on uniform negatives. Needs user-item pairs only.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from cinesync.train.trainer import TrainerConfig
from cinesync_plugins.layers import init_embedding
from cinesync_plugins.recommenders._neural import PairScoringConfig, PairScoringRecommender, PairTower


class ConcatMLP(nn.Module):
    """User and item embeddings, an MLP over their concatenation, a linear output and an item bias."""

    def __init__(self, n_users: int, n_items: int, dim: int, layers: list[int], dropout: float) -> None:
        super().__init__()
        self.users = init_embedding(nn.Embedding(n_users, dim), std=0.01)
        self.items = init_embedding(nn.Embedding(n_items, dim), std=0.01)
        self.item_bias = nn.Embedding(n_items, 1)
        nn.init.zeros_(self.item_bias.weight)
        self.tower = PairTower(dim, dim, layers, dropout)
        self.output = nn.Linear(layers[-1], 1)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of users ``(B,)`` for items ``(B, M)`` or ``(1, M)``: shape ``(B, M)``."""
        hidden = self.tower(self.users(users).unsqueeze(1), self.items(items))
        return (self.output(hidden) + self.item_bias(items)).squeeze(-1)


class SimpleNCF(PairScoringRecommender):
    """Concatenated user and item embeddings into an MLP (He et al. 2017's MLP model, plus an item bias)."""

    class Config(PairScoringConfig):
        dim: int = Field(32, ge=1, description="Embedding size of users and of items.")
        layers: list[int] = Field(
            default_factory=lambda: [64, 32, 16], min_length=1, description="Hidden sizes of the MLP."
        )
        dropout: float = Field(0.0, ge=0, lt=1, description="Dropout after each hidden layer.")

    config: Config

    def default_trainer(self) -> TrainerConfig:
        return TrainerConfig(epochs=40, batch_size=1024, learning_rate=1e-3, optimizer="adam", patience=5)

    def build_module(self, n_users: int, n_items: int) -> ConcatMLP:
        config = self.config
        return ConcatMLP(n_users, n_items, config.dim, config.layers, config.dropout)

    def pair_scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.trained_module(users, items)
