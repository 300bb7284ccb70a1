"""A causal transformer next-item model with rotary (or learned) position encoding.

The transformer is from Vaswani et al., "Attention Is All You Need", NeurIPS 2017. Rotary position embeddings
(RoPE) are from Su, Lu, Pan, Murtadha, Wen & Liu, "RoFormer: Enhanced Transformer with Rotary Position
Embedding", arXiv:2104.09864, 2021 (Neurocomputing 2024).

The input is a user's last ``max_length`` items. Each position's representation is its item embedding scaled by
``√dim`` (with ``positions = "learned"``, plus a learned embedding of its position, exactly as SASRec), followed
by dropout. ``layers`` pre-norm blocks refine it: ``h ← h + Dropout(W_o · Attention(LN(h)))`` then
``h ← h + Dropout(FFN(LN(h)))`` with a GELU feed-forward layer of width ``4·dim``. The attention is causal
(position ``t`` sees the items up to ``t``; padding is never attended to) and multi-head; with rotary positions
each head's queries and keys are rotated before the dot product: coordinate pair ``(x_j, x_{j+h/2})`` of a
``h``-dimensional head at position ``m`` is turned by the angle ``m·θ_j``, ``θ_j = 10000^(-2j/h)``. A rotation
keeps lengths, and ``R_m q · R_n k = q · R_{n-m} k``, so attention scores depend on the items and on how far
apart they are, not on where the window starts: no absolute position embedding is needed (and left padding has
no effect). A final layer norm gives the state ``F_t``; the score of item ``i`` after position ``t`` is
``F_t · E_i`` with the shared item embedding table ``E``.

Training and losses are those of every sequential model (:mod:`._sequential`): every position predicts the next
item, by default with the full softmax over the catalogue. The encoder is in :mod:`._transformer`.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from cinesync.train.trainer import TrainerConfig
from cinesync_plugins.recommenders._sequential import SequentialRecommender
from cinesync_plugins.recommenders._transformer import PositionEncoding, TransformerSequenceEncoder
from cinesync_plugins.recommenders.sasrec import SASRec


class TransformerSequential(SequentialRecommender):
    """A causal transformer over the user's recent items with rotary (RoFormer) or learned positions."""

    class Config(SASRec.Config):
        positions: PositionEncoding = Field(
            "rotary",
            description="'rotary': RoPE on queries and keys (Su et al. 2021); 'learned': a learned absolute "
            "position embedding added to the input, as SASRec.",
        )

        @model_validator(mode="after")
        def _rotary_heads_are_even(self) -> TransformerSequential.Config:
            if self.positions == "rotary" and (self.dim // self.heads) % 2:
                raise ValueError(
                    f"rotary positions need an even head size, but dim / heads = {self.dim // self.heads}"
                )
            return self

    config: Config

    def default_trainer(self) -> TrainerConfig:
        # SASRec's tuned settings (sasrec.py), not tuned separately for this model.
        return TrainerConfig(epochs=200, batch_size=256, learning_rate=3e-3, optimizer="adam", patience=10)

    def build_module(self, n_users: int, n_items: int) -> TransformerSequenceEncoder:
        config = self.config
        return TransformerSequenceEncoder(
            n_items,
            config.dim,
            config.max_length,
            config.layers,
            config.heads,
            config.dropout,
            config.positions,
        )
