"""Enhanced two-tower model: the user tower attends over item-tower representations of the user's history, and
gates fuse the id and content parts of each tower.

The two-tower model of Yi et al. (RecSys 2019, see ``two_tower``) with two additions:

* **Gated fusion** of an id part and a content part in each tower, as the gated units of Dauphin, Fan, Auli &
  Grangier ("Language Modeling with Gated Convolutional Networks", ICML 2017) and the fusion gates of
  multimodal recommenders do: item ``i``'s token is ``h_i = σ(W_i [q_i ; c_i]) ⊙ q_i + (1 - σ(·)) ⊙ c_i`` with
  ``q_i`` its id embedding and ``c_i = W_g g_i`` the projection of its multi-hot genres; the user's is
  ``σ(W_u [p_u ; a_u]) ⊙ p_u + (1 - σ(·)) ⊙ a_u``, between the user's id embedding ``p_u`` and the attention
  summary ``a_u`` below. Each gate is per dimension, so a rare item can lean on its genres and a frequent one on
  its id.
* **Cross-tower attention** (multi-head scaled dot-product attention, Vaswani et al., NeurIPS 2017): the user's
  id embedding is the query over the tokens ``h_j`` of the user's ``history_length`` most recent training items,
  which the *item tower* computes (keys and values are projections of item-tower tokens, so the item side's
  content shapes the user representation), plus one learned "no history" token so that every user has
  something to attend to (DIN's attention over behaviours, Zhou et al., KDD 2018, with the candidate replaced by
  the user).

The attention reads the user's history, not the candidate item: that is the choice that keeps the towers
independent, so ``score`` stays ``user_embeddings @ item_embeddings.T / τ``, one matrix product over the
catalogue (attending to the candidate would need a network pass per user-item pair). Each tower ends in an MLP
and an L2 normalisation; training is the log-q corrected in-batch softmax of ``two_tower``. Needs item genres
(catalogue column ``genres``), read at fit time and saved with the weights.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional

from cinesync.train.trainer import TrainerConfig
from cinesync_plugins.recommenders._two_tower import (
    GatedFusion,
    TwoTowerConfig,
    TwoTowerNetwork,
    TwoTowerRecommender,
    mlp_tower,
)


class HistoryAttention(nn.Module):
    """Multi-head attention of one query per user ``(B, d)`` over the tokens of the user's history items.

    The tokens come as a table ``(N, d)``, one row per item, and the histories as indices into it ``(B, L)``:
    keys and values are projected once per item of the table, then gathered, rather than once per history
    position (a batch's histories hold the same items many times over). A learned key and value, never masked,
    stand for "no history", so a user with no history attends to them.
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
        self.empty_key = nn.Parameter(torch.zeros(dim))
        self.empty_value = nn.Parameter(torch.zeros(dim))

    def forward(
        self, query: torch.Tensor, tokens: torch.Tensor, items: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """The attention output ``(B, d)`` of ``query`` over rows ``items`` of ``tokens``, where ``mask``."""
        batch, dim = query.shape
        head_dim = dim // self.heads
        keys = torch.cat([self.empty_key.unsqueeze(0), self.key(tokens)])
        values = torch.cat([self.empty_value.unsqueeze(0), self.value(tokens)])
        # Row 0 is the "no history" token; item j is row j + 1.
        rows = torch.cat([items.new_zeros(batch, 1), items + 1], dim=1)
        mask = torch.cat([mask.new_ones(batch, 1), mask], dim=1)
        # One query per user: products and sums over (B, 1 + L, H, dh) beat B·H tiny matrix products, and
        # embedding()'s backward sums into the table faster than indexing's.
        queries = self.query(query).view(batch, 1, self.heads, head_dim)
        keys = functional.embedding(rows, keys).view(batch, -1, self.heads, head_dim)
        values = functional.embedding(rows, values).view(batch, -1, self.heads, head_dim)
        logits = (queries * keys).sum(-1) / math.sqrt(head_dim)  # (B, 1 + L, H)
        weights = torch.softmax(logits.masked_fill(~mask.unsqueeze(-1), float("-inf")), dim=1)
        attended = (weights.unsqueeze(-1) * values).sum(1)  # (B, H, dh)
        return self.out(attended.reshape(batch, dim))


class EnhancedTowers(TwoTowerNetwork):
    """Gated id/genre item tokens, user attention over the history's item tokens, gated user fusion, MLPs."""

    def __init__(
        self, item_features: torch.Tensor, user_history: torch.Tensor, config: EnhancedTwoTower.Config
    ) -> None:
        super().__init__(item_features, user_history, config)
        dim = config.dim
        self.add_id_embeddings(dim)
        self.features = nn.Linear(self.n_features, dim, bias=False)
        self.item_fusion = GatedFusion(dim)
        self.attention = HistoryAttention(dim, config.heads)
        self.user_fusion = GatedFusion(dim)
        self.user_mlp = mlp_tower(dim, config)
        self.item_mlp = mlp_tower(dim, config)

    def item_tokens(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """``h_i``: the gated fusion of each item's id embedding and genre projection (all items if None)."""
        ids = self.items.weight if items is None else self.items(items)
        features = self.item_features if items is None else self.item_features[items]
        return self.item_fusion(ids, self.features(features))

    def user_tower(self, users: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        user_vectors = self.users(users)
        items, mask = self.history(users, exclude)
        attended = self.attention(user_vectors, self.item_tokens(), items, mask)
        return self.user_mlp(self.user_fusion(user_vectors, attended))

    def item_tower(self, items: torch.Tensor) -> torch.Tensor:
        return self.item_mlp(self.item_tokens(items))


class EnhancedTwoTower(TwoTowerRecommender):
    """Two towers with gated id/content fusion and user-to-history cross-tower attention; needs item genres.

    Exposes ``user_embeddings(users)``, ``item_embeddings(items=None)`` (unit vectors) and ``temperature``;
    ``score`` is ``user_embeddings @ item_embeddings.T / temperature``.
    """

    requires: ClassVar[frozenset[str]] = frozenset({"item_genres"})

    class Config(TwoTowerConfig):
        # On ml-100k's validation split (dropout x history_length): 20 items 0.0688 NDCG@10, 50 items 0.0684 at
        # dropout 0.2 (0.0630 and 0.0661 at 0.4); 20 is the cheaper of two equals.
        history_length: int = Field(
            20, ge=0, description="Most recent training items of a user that the attention reads; 0 for none."
        )
        heads: int = Field(2, ge=1, description="Attention heads; must divide dim.")

    config: Config

    def default_trainer(self) -> TrainerConfig:
        # two_tower's settings before its learning rate was tuned (batches of 1024 beat 2048 there); the best
        # epochs on ml-100k's validation split fell between 10 and 25, so 40 epochs with patience 5 lose nothing.
        return TrainerConfig(epochs=40, batch_size=1024, learning_rate=1e-3, optimizer="adam", patience=5)

    def build_module(self, n_users: int, n_items: int) -> EnhancedTowers:
        return EnhancedTowers(*self.fitted_inputs(), self.config)
