"""LSTM next-item recommender: GRU4Rec's network with an LSTM cell.

Hochreiter & Schmidhuber, "Long Short-Term Memory", Neural Computation 1997, as the recurrent unit of the
session-based recommender of Hidasi et al. (ICLR 2016; see :mod:`.gru4rec`), which reported GRU units to work
better than LSTM ones on session data; this plugin lets that be checked on other data.

The input is a user's last ``max_length`` items (or an anonymous session's items). Item embeddings go through
dropout (``embedding_dropout``), a ``layers``-deep LSTM of width ``dim`` reads them in order from a zero state, and
dropout (``dropout``) on its output gives the state ``h_t``; the score of item ``i`` after position ``t`` is
``h_t · E_i`` with the same (tied) item table ``E``. Every position of each training window predicts its next item
with ``config.loss`` (full softmax by default). The network is :class:`._recurrent.RecurrentEncoder` with
``cell = "lstm"``; everything else is as in :mod:`.gru4rec`.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from cinesync.train.trainer import TrainerConfig
from cinesync_plugins.recommenders._recurrent import CellType, RecurrentRecommender


class LSTMSequential(RecurrentRecommender):
    """An LSTM over the user's recent items whose final state is dotted with the tied item table."""

    cell: ClassVar[CellType] = "lstm"

    class Config(RecurrentRecommender.Config):
        max_length: int = Field(50, ge=2, description="Most recent items a history or session is cut to.")
        dim: int = Field(64, ge=1, description="Size of item embeddings and of the LSTM's hidden state.")
        # ml-100k validation NDCG@10: dropout 0.4 gave 0.1175, 0.2 gave 0.1137 (as for GRU4Rec, 0.4 is better).
        dropout: float = Field(
            0.4,
            ge=0,
            lt=1,
            description="Dropout on the hidden states, between layers and before scoring (dropout_p_hidden).",
        )

    config: Config

    def default_trainer(self) -> TrainerConfig:
        return TrainerConfig(epochs=100, batch_size=128, learning_rate=1e-3, optimizer="adam", patience=5)
