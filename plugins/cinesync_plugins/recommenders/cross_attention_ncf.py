"""Cross-attention NCF: user and item token sets read each other, a mixture of experts scores the pair, and an
auxiliary head predicts the item's genres.

A neural collaborative filter (He, Liao, Zhang, Nie, Hu & Chua, "Neural Collaborative Filtering", WWW 2017)
whose interaction function is built from three published pieces:

* **Token sets and cross-attention** (Vaswani et al., "Attention Is All You Need", NeurIPS 2017): a user is two
  tokens, their id embedding and a taste token (the mean of the genre embeddings of their training items); an
  item is its id embedding followed by one token per genre. The user tokens attend to the item's tokens with
  multi-head attention (padding masked), and the mean of their outputs summarises what of the item matters to
  this user.
* **A mixture-of-experts gate** (Shazeer et al., "Outrageously Large Neural Networks", ICLR 2017; Ma et al.,
  "Modeling Task Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts", KDD 2018): the pair
  vector ``[p_u ⊙ q_i ; attention]`` goes through ``experts`` small MLPs, mixed by softmax gate weights computed
  from the same vector; a linear layer and an item bias give the score.
* **An auxiliary genre task**: a linear head predicts the item's genres from its id embedding (multi-label
  log loss), so the id embeddings of rare items also learn content. ``loss`` returns ``{"ranking": ...,
  "genre": ...}`` and the trainer weighs the two with learned uncertainty weights (Kendall, Gal & Cipolla,
  CVPR 2018) unless ``training.tasks`` says otherwise.

Needs item genres (catalogue column ``genres``). Item genre ids and users' genre profiles are computed at fit
time and saved with the weights (``item_genre_ids``, ``user_genre_profile``), so scoring needs no dataset.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional

from cinesync.interfaces import ComponentConfig
from cinesync.train.trainer import TaskConfig, TrainerConfig
from cinesync_plugins.layers import init_embedding, mlp, ranking_loss
from cinesync_plugins.recommenders._neural import (
    PADDING_GENRE,
    GenreAwareRecommender,
    PairScoringConfig,
    genre_vocabulary_size,
    padded_genre_ids,
)

if TYPE_CHECKING:
    from cinesync.data.dataset import Dataset


class CrossAttention(nn.Module):
    """Multi-head attention of user tokens ``(B, U, d)`` over item tokens ``(B or 1, M, T, d)``, per pair.

    Item keys and values are projected once per item and broadcast over the users, not once per pair.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"the embedding size {dim} must be a multiple of the number of heads {heads}")
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(
        self, user_tokens: torch.Tensor, item_tokens: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """The user tokens' attention outputs, averaged: ``(B, M, d)``; ``mask`` is True on real item tokens."""
        batch, n_user_tokens, dim = user_tokens.shape
        head_dim = dim // self.heads
        # (B, 1, H, U, dh) against (b, M, H, dh, T): matmul broadcasts users over the items' grid.
        query = self.query(user_tokens).view(batch, 1, n_user_tokens, self.heads, head_dim).transpose(2, 3)
        keys = self.key(item_tokens).unflatten(-1, (self.heads, head_dim)).transpose(-3, -2)
        values = self.value(item_tokens).unflatten(-1, (self.heads, head_dim)).transpose(-3, -2)
        logits = query @ keys.transpose(-1, -2) / math.sqrt(head_dim)
        logits = logits.masked_fill(~mask[:, :, None, None, :], float("-inf"))
        attended = torch.softmax(logits, dim=-1) @ values  # (B, M, H, U, dh)
        return self.out(attended.transpose(2, 3).flatten(-2)).mean(-2)


class CrossAttentionNCFModule(nn.Module):
    """Embeddings, cross-attention, the gated experts, the output layer and the auxiliary genre head."""

    def __init__(
        self,
        item_genre_ids: torch.Tensor,
        user_genre_profile: torch.Tensor,
        dim: int,
        heads: int,
        experts: int,
        expert_layers: list[int],
        dropout: float,
    ) -> None:
        super().__init__()
        n_items, n_users = len(item_genre_ids), len(user_genre_profile)
        n_genres = genre_vocabulary_size(item_genre_ids)
        self.register_buffer("item_genre_ids", item_genre_ids.clone())
        self.register_buffer("user_genre_profile", user_genre_profile.clone())
        self.users = init_embedding(nn.Embedding(n_users, dim), std=0.01)
        self.items = init_embedding(nn.Embedding(n_items, dim), std=0.01)
        self.genres = init_embedding(nn.Embedding(n_genres, dim, padding_idx=PADDING_GENRE), std=0.01)
        self.item_bias = nn.Embedding(n_items, 1)
        nn.init.zeros_(self.item_bias.weight)
        self.attention = CrossAttention(dim, heads)
        self.gate = nn.Linear(2 * dim, experts)
        self.experts = nn.ModuleList(
            mlp([2 * dim, *expert_layers], dropout, final_activation=True) for _ in range(experts)
        )
        self.output = nn.Linear(expert_layers[-1], 1)
        self.genre_head = nn.Linear(dim, n_genres)

    def pair_vectors(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``[p_u ⊙ q_i ; cross-attention]`` for users ``(B,)`` and items ``(B, M)`` or ``(1, M)``: ``(B, M, 2d)``."""
        user_vectors = self.users(users)
        taste = self.user_genre_profile[users] @ self.genres.weight
        user_tokens = torch.stack([user_vectors, taste], dim=1)
        item_vectors = self.items(items)
        genre_ids = self.item_genre_ids[items]
        item_tokens = torch.cat([item_vectors.unsqueeze(-2), self.genres(genre_ids)], dim=-2)
        mask = torch.cat(
            [torch.ones_like(genre_ids[..., :1], dtype=torch.bool), genre_ids != PADDING_GENRE], -1
        )
        attended = self.attention(user_tokens, item_tokens, mask)
        interaction = user_vectors.unsqueeze(1) * item_vectors
        return torch.cat([interaction, attended.expand_as(interaction)], dim=-1)

    def gate_weights(self, pair_vectors: torch.Tensor) -> torch.Tensor:
        """Softmax weights of the experts for each pair: ``(..., experts)``."""
        return torch.softmax(self.gate(pair_vectors), dim=-1)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of users ``(B,)`` for items ``(B, M)`` or ``(1, M)``: shape ``(B, M)``."""
        vectors = self.pair_vectors(users, items)
        gates = self.gate_weights(vectors)
        mixed = sum(gates[..., e : e + 1] * expert(vectors) for e, expert in enumerate(self.experts))
        assert isinstance(mixed, torch.Tensor)
        return (self.output(mixed) + self.item_bias(items)).squeeze(-1)

    def genre_loss(self, items: torch.Tensor) -> torch.Tensor:
        """Mean multi-label log loss of the genre head on ``items``' genres (padding and no-genre excluded)."""
        n_genres = self.genre_head.out_features
        targets = functional.one_hot(self.item_genre_ids[items], n_genres).amax(-2).float()
        logits = self.genre_head(self.items(items))
        # Columns 0 and 1 are padding and "no genre", not genres to predict.
        return functional.binary_cross_entropy_with_logits(logits[:, 2:], targets[:, 2:])


def user_genre_profiles(dataset: Dataset, item_genre_ids: torch.Tensor) -> torch.Tensor:
    """Each user's share of each genre id over their training items ``(n_users, genre vocabulary)``."""
    indptr, indices, _ = dataset.csr()
    users = torch.repeat_interleave(torch.arange(dataset.n_users), torch.from_numpy(indptr).diff())
    per_item = functional.one_hot(item_genre_ids, genre_vocabulary_size(item_genre_ids)).sum(-2).float()
    per_item[:, PADDING_GENRE] = 0.0
    profiles = torch.zeros(dataset.n_users, per_item.shape[1]).index_add_(
        0, users, per_item[torch.from_numpy(indices)]
    )
    return profiles / profiles.sum(1, keepdim=True).clamp_min(1.0)


class CrossAttentionNCF(GenreAwareRecommender):
    """User-item cross-attention, a mixture-of-experts scorer and an auxiliary genre head (two task heads)."""

    class Config(PairScoringConfig):
        dim: int = Field(32, ge=1, description="Size of every embedding and token.")
        heads: int = Field(2, ge=1, description="Attention heads; must divide dim.")
        experts: int = Field(4, ge=1, description="Expert MLPs the gate mixes.")
        expert_layers: list[int] = Field(
            default_factory=lambda: [32, 16], min_length=1, description="Hidden sizes of each expert."
        )
        dropout: float = Field(0.0, ge=0, lt=1, description="Dropout after each hidden layer of the experts.")

    config: Config
    # The pair work is wider than an MLP tower's (attention over a dozen tokens, several experts).
    max_pairs: ClassVar[int] = 1 << 16

    def __init__(self, config: ComponentConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.user_genre_profile: torch.Tensor | None = None

    def default_trainer(self) -> TrainerConfig:
        # Both heads with learned uncertainty weights (TaskConfig's default): the multi-label genre loss and the
        # ranking loss have different scales, which a fixed sum would leave to chance.
        return TrainerConfig(
            epochs=30,
            batch_size=1024,
            learning_rate=1e-3,
            optimizer="adam",
            patience=4,
            tasks=[TaskConfig(name="ranking"), TaskConfig(name="genre", loss="bce")],
        )

    def _fit(self, dataset: Dataset, *, validation: Dataset | None, trainer: TrainerConfig | None) -> None:
        self.user_genre_profile = user_genre_profiles(dataset, padded_genre_ids(dataset))
        super()._fit(dataset, validation=validation, trainer=trainer)

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.user_genre_profile = tensors["user_genre_profile"]
        super().load_state_tensors(tensors)

    def build_module(self, n_users: int, n_items: int) -> CrossAttentionNCFModule:
        if self.user_genre_profile is None:
            raise RuntimeError(
                "CrossAttentionNCF.build_module needs users' genre profiles: fit or load the model"
            )
        config = self.config
        return CrossAttentionNCFModule(
            self.fitted_genre_ids(),
            self.user_genre_profile,
            config.dim,
            config.heads,
            config.experts,
            config.expert_layers,
            config.dropout,
        )

    @property
    def network(self) -> CrossAttentionNCFModule:
        module = self.trained_module
        assert isinstance(module, CrossAttentionNCFModule)
        return module

    def pair_scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.network(users, items)

    def task_heads(self) -> dict[str, str]:
        return {"ranking": self.config.loss, "genre": "bce"}

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{"ranking": the configured ranking loss, "genre": the genre head's loss on the positives}``."""
        return {
            "ranking": ranking_loss(self.config.loss, *self.batch_scores(batch)),
            "genre": self.network.genre_loss(batch["positives"]),
        }
