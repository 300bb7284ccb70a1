"""Recurrent layers over left-padded item sequences, shared by the GRU/LSTM sequential recommenders.

The sequential base (:mod:`._sequential`) left-pads sequences so that the most recent item is the last position.
A GRU or LSTM run over such a row would start on the padding: padding embeddings are zero, but a recurrent cell
still moves its state on a zero input (its biases do), so the state after the real items would depend on how
much padding precedes them. :class:`RecurrentLayer` therefore rolls each row so that its real items come first,
runs the network from a zero state, and rolls the outputs back; padding positions get zero states. The state at
position ``t`` then depends on the real items up to ``t`` only, whatever the padding, so every position can be
trained at once. Rolling (two gathers) rather than packing keeps one code path for every cell type and needs no
sorting by length.

:class:`RecurrentEncoder` is GRU4Rec's network (Hidasi et al., ICLR 2016): item embeddings with dropout, a
recurrent network, dropout on its states, scored against the same (tied) item table. :class:`RecurrentRecommender`
is the recommender around it; ``gru4rec`` and ``lstm_sequential`` differ only in the cell.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from cinesync_plugins.recommenders._sequential import (
    PAD,
    SequenceEncoder,
    SequentialConfig,
    SequentialRecommender,
)

CellType = Literal["gru", "lstm"]


def left_padding(inputs: torch.Tensor) -> torch.Tensor:
    """The number of leading padding positions of each left-padded row of ``inputs`` (B, L): (B, 1)."""
    return (inputs == PAD).sum(1, keepdim=True)


def roll_rows(values: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Each row ``b`` of ``values`` (B, L, ...) rolled left by ``shifts[b]`` (B, 1) positions, cyclically."""
    length = values.shape[1]
    index = (torch.arange(length, device=values.device) + shifts) % length  # (B, L)
    index = index.view(*index.shape, *([1] * (values.dim() - 2))).expand_as(values)
    return values.gather(1, index)


class RecurrentLayer(nn.Module):
    """A ``cell`` network (``layers`` deep, ``dim`` wide) over embedded left-padded sequences.

    ``forward(embedded (B, L, d_in), inputs (B, L))`` returns the hidden state after each position (B, L, dim):
    causal, independent of the amount of left padding, and zero at padding positions (see the module docstring).
    """

    def __init__(
        self, input_dim: int, dim: int, cell: CellType, layers: int = 1, dropout: float = 0.0
    ) -> None:
        super().__init__()
        network = nn.GRU if cell == "gru" else nn.LSTM
        self.network = network(
            input_dim, dim, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0
        )

    def forward(self, embedded: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        padding = left_padding(inputs)
        outputs, _ = self.network(roll_rows(embedded, padding))  # real items first, padding after them
        outputs = roll_rows(outputs, -padding)
        return outputs * (inputs != PAD).unsqueeze(-1)


class RecurrentEncoder(SequenceEncoder):
    """GRU4Rec's network: item embeddings with dropout, a recurrent network, dropout on its states.

    The state at each position is dotted with the item table (tied input and output embeddings, GRU4Rec's
    ``constrained_embedding``), so the hidden size is ``dim``.
    """

    def __init__(
        self,
        n_items: int,
        dim: int,
        cell: CellType,
        layers: int = 1,
        embedding_dropout: float = 0.0,
        hidden_dropout: float = 0.0,
    ) -> None:
        super().__init__(n_items, dim)
        self.embedding_dropout = nn.Dropout(embedding_dropout)
        self.recurrent = RecurrentLayer(dim, dim, cell, layers, hidden_dropout)
        self.hidden_dropout = nn.Dropout(hidden_dropout)

    def states(self, inputs: torch.Tensor) -> torch.Tensor:
        embedded = self.embedding_dropout(self.item_embedding(inputs))
        return self.hidden_dropout(self.recurrent(embedded, inputs))


class RecurrentRecommender(SequentialRecommender):
    """A next-item recommender whose encoder is a :class:`RecurrentEncoder` of cell type :attr:`cell`."""

    #: The recurrent cell; a subclass sets it.
    cell: ClassVar[CellType]

    class Config(SequentialConfig):
        layers: int = Field(1, ge=1, description="Stacked recurrent layers (GRU4Rec uses one).")
        embedding_dropout: float = Field(
            0.0, ge=0, lt=1, description="Dropout on the input item embeddings (GRU4Rec's dropout_p_embed)."
        )
        dropout: float = Field(
            0.2,
            ge=0,
            lt=1,
            description="Dropout on the hidden states, between layers and before scoring (dropout_p_hidden).",
        )

    config: Config

    def build_module(self, n_users: int, n_items: int) -> RecurrentEncoder:
        config = self.config
        return RecurrentEncoder(
            n_items, config.dim, self.cell, config.layers, config.embedding_dropout, config.dropout
        )
