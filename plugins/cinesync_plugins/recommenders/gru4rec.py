"""GRU4Rec: session-based recommendation with a GRU over the session's items.

Hidasi, Karatzoglou, Baltrunas & Tikk, "Session-based Recommendations with Recurrent Neural Networks", ICLR 2016;
Hidasi & Karatzoglou, "Recurrent Neural Networks with Top-k Gains for Session-based Recommendations", CIKM 2018.

The input is a user's last ``max_length`` items (or an anonymous session's items). Each item's embedding ``E_i``
goes through dropout (``embedding_dropout``), a ``layers``-deep GRU of width ``dim`` reads them in order from a
zero state, and dropout (``dropout``) on its output gives the state ``h_t``. The score of item ``i`` after
position ``t`` is ``h_t · E_i``: the output item table is the input one (the official ``constrained_embedding``),
which also makes the hidden size ``dim``. The network is :class:`._recurrent.RecurrentEncoder`.

What follows the official implementation (github.com/hidasib/GRU4Rec and its PyTorch port): one GRU layer over
item embeddings tied to the output table, separate embedding and hidden dropout, the final hidden state dotted
with the item table, and the cross-entropy loss: the full softmax over every item (``loss = "softmax"``, the
default; the official code approximates it with sampling), or a sampled softmax (``"sampled_softmax"`` with
``negatives`` items per target). What differs:

* session-parallel mini-batches (one step per session per batch, the state carried across batches and reset at
  session ends) are replaced by the shared training windows of :mod:`._sequential`: windows of ``max_length + 1``
  items, backpropagated through the whole window, every position predicting its next item. Each item is still a
  target once per epoch;
* sampled negatives are uniform (the base's sampler), not the official popularity^``sample_alpha`` draw shared
  with in-batch negatives and its logQ correction; there is no output bias and no BPR-max loss;
* the optimiser is Adam rather than Adagrad with Nesterov momentum (Adam tuned better on validation here).

A user's "session" is their whole time-ordered history: MovieLens has no session boundaries.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from cinesync.train.trainer import TrainerConfig
from cinesync_plugins.recommenders._recurrent import CellType, RecurrentRecommender


class GRU4Rec(RecurrentRecommender):
    """A GRU over the session's items whose final state is dotted with the tied item table (Hidasi et al.)."""

    cell: ClassVar[CellType] = "gru"

    class Config(RecurrentRecommender.Config):
        max_length: int = Field(50, ge=2, description="Most recent items a history or session is cut to.")
        dim: int = Field(64, ge=1, description="Size of item embeddings and of the GRU's hidden state.")
        # ml-100k validation NDCG@10: dropout 0.4 gave 0.1134 (dim 64) and 0.1099 (dim 128); 0.2 gave 0.1065 and
        # 0.1043.
        dropout: float = Field(
            0.4,
            ge=0,
            lt=1,
            description="Dropout on the hidden states, between layers and before scoring (dropout_p_hidden).",
        )

    config: Config

    def default_trainer(self) -> TrainerConfig:
        return TrainerConfig(epochs=100, batch_size=128, learning_rate=1e-3, optimizer="adam", patience=5)
