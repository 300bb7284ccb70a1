"""NeuMF: generalised matrix factorisation and an MLP, fused by one output layer.

He, Liao, Zhang, Nie, Hu & Chua, "Neural Collaborative Filtering", WWW 2017. Each user and item has two
embeddings: one for GMF, whose element-wise product ``p_u ⊙ q_i`` keeps MF's bilinear interaction, and one for
the MLP tower over ``[u ; i]``, which learns a non-linear one. The score is a linear layer over both branches'
last vectors, ``h · [p_u ⊙ q_i ; MLP(u, i)] + b``.

He et al. trained with the pointwise log loss on 4 uniform negatives per interaction (``loss = "bce"``); the
pairwise BPR loss and the sampled softmax train for top-k ranking directly and are offered too (the default is
the one that scored best on validation, see docs/models/collaborative.md). Needs user-item pairs only. Scoring
evaluates the network on the users x items grid in chunks (:class:`~._neural.PairScoringRecommender`).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from cinesync.train.trainer import TrainerConfig
from cinesync_plugins.layers import RankingLoss, init_embedding
from cinesync_plugins.recommenders._neural import PairScoringConfig, PairScoringRecommender, PairTower


class NeuMFModule(nn.Module):
    """GMF and MLP embeddings, the MLP tower, and the output layer over both branches."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int,
        mlp_dim: int,
        layers: list[int],
        dropout: float,
        item_bias: bool = False,
    ) -> None:
        super().__init__()
        self.gmf_users = init_embedding(nn.Embedding(n_users, dim), std=0.01)
        self.gmf_items = init_embedding(nn.Embedding(n_items, dim), std=0.01)
        self.mlp_users = init_embedding(nn.Embedding(n_users, mlp_dim), std=0.01)
        self.mlp_items = init_embedding(nn.Embedding(n_items, mlp_dim), std=0.01)
        self.tower = PairTower(mlp_dim, mlp_dim, layers, dropout)
        self.output = nn.Linear(dim + layers[-1], 1)
        self.item_bias = nn.Embedding(n_items, 1) if item_bias else None
        if self.item_bias is not None:
            nn.init.zeros_(self.item_bias.weight)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of users ``(B,)`` for items ``(B, M)`` or ``(1, M)``: shape ``(B, M)``."""
        gmf = self.gmf_users(users).unsqueeze(1) * self.gmf_items(items)
        tower = self.tower(self.mlp_users(users).unsqueeze(1), self.mlp_items(items))
        scores = self.output(torch.cat([gmf, tower], dim=-1))
        if self.item_bias is not None:
            scores = scores + self.item_bias(items)
        return scores.squeeze(-1)


class NeuMF(PairScoringRecommender):
    """Neural matrix factorisation (He et al., WWW 2017): GMF + MLP fused by a final linear layer."""

    class Config(PairScoringConfig):
        # ml-100k validation NDCG@10 (docs/models/collaborative.md): bpr/bce/softmax with 4 negatives at learning
        # rate 1e-3: 0.0593/0.0584/0.0578; softmax with 32 negatives: 0.0647 (128: 0.0546, out of time); with 32
        # negatives at 3e-3: dim 32 0.0732, dim 64 0.0774 (test 0.0744), the defaults.
        loss: RankingLoss = Field(
            "softmax",
            description="'softmax' (the default): cross-entropy of the positive against its negatives; 'bpr': "
            "pairwise -log σ(s⁺ - s⁻); 'bce': pointwise log loss (He et al. 2017).",
        )
        negatives: int = Field(32, ge=1, description="Uniform random negative items per observed pair.")
        dim: int = Field(64, ge=1, description="GMF embedding size (the GMF branch's predictive factors).")
        mlp_dim: int = Field(32, ge=1, description="MLP embedding size of users and of items.")
        layers: list[int] = Field(
            default_factory=lambda: [64, 32, 16],
            min_length=1,
            description="Hidden sizes of the MLP tower; He et al. halve each layer (the tower pyramid).",
        )
        dropout: float = Field(0.0, ge=0, lt=1, description="Dropout after each hidden layer of the tower.")
        item_bias: bool = Field(
            False, description="Add a learned bias per item to the score (not in He et al.; popularity)."
        )

    config: Config

    def default_trainer(self) -> TrainerConfig:
        return TrainerConfig(epochs=40, batch_size=1024, learning_rate=3e-3, optimizer="adam", patience=5)

    def build_module(self, n_users: int, n_items: int) -> NeuMFModule:
        config = self.config
        return NeuMFModule(
            n_users, n_items, config.dim, config.mlp_dim, config.layers, config.dropout, config.item_bias
        )

    def pair_scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.trained_module(users, items)
