"""BERT4Rec: a bidirectional transformer trained to fill in masked items (the cloze objective).

Sun, Liu, Wu, Pei, Lin, Ou & Jiang, "BERT4Rec: Sequential Recommendation with Bidirectional Encoder
Representations from Transformer", CIKM 2019; the transformer is Vaswani et al.'s (NeurIPS 2017).

The encoder is SASRec's (scaled item embeddings plus learned position embeddings, ``layers`` pre-norm blocks, a
final layer norm; see :mod:`.sasrec`) with two differences: the item table has one more row, the ``[MASK]``
token (index ``n_items + 1``; 0 is padding), and attention is **bidirectional**: every real position attends to
every real position, before and after it; padding is never attended to, and a padding position attends to
itself only (so no row of the softmax is empty).

Training cuts each user's sequence into windows of ``max_length`` items (consecutive windows share one item). In
every window each real item is replaced by ``[MASK]`` with probability ``mask_probability``, and the last item
is always masked, the paper's extra training samples that mask only the last item, which match how the model is
queried. The model predicts the original item at every masked position, by default with the full softmax over
the catalogue (``loss``; the output item table is the input one without its padding and ``[MASK]`` rows).

Scoring appends ``[MASK]`` after a user's history or a session (dropping the oldest item when it is already
``max_length`` long) and ranks items by the dot product of that position's state with the item table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from pydantic import Field

from cinesync.train.trainer import TrainerConfig
from cinesync_plugins.layers import uniform_negatives
from cinesync_plugins.recommenders._sequential import PAD, SequentialRecommender, sequence_windows
from cinesync_plugins.recommenders.sasrec import SASRec, SelfAttentiveEncoder

if TYPE_CHECKING:
    from cinesync.data.dataset import Dataset


def bidirectional_attention_mask(inputs: torch.Tensor, heads: int) -> torch.Tensor:
    """Boolean ``(B·heads, L, L)`` mask, True where attention is blocked, for left-padded ``inputs`` (B, L).

    Every position may attend to every position that holds an item or ``[MASK]``; padding attends to itself.
    """
    length = inputs.shape[1]
    real_keys = (inputs != PAD).unsqueeze(1)  # (B, 1, L)
    diagonal = torch.eye(length, dtype=torch.bool, device=inputs.device)
    allowed = real_keys | diagonal
    return ~allowed.repeat_interleave(heads, dim=0)


class BidirectionalEncoder(SelfAttentiveEncoder):
    """SASRec's encoder with a ``[MASK]`` row in the item table and attention in both directions."""

    def __init__(
        self, n_items: int, dim: int, max_length: int, layers: int, heads: int, dropout: float
    ) -> None:
        super().__init__(n_items + 1, dim, max_length, layers, heads, dropout)  # the extra row is [MASK]
        self.mask_token = n_items + 1

    def states(self, inputs: torch.Tensor) -> torch.Tensor:
        hidden = self.embedding_dropout(self.embed(inputs)) * (inputs != PAD).unsqueeze(-1)
        hidden = self.blocks(hidden, mask=bidirectional_attention_mask(inputs, self.heads))
        return self.final_norm(hidden)

    def output_weights(self) -> torch.Tensor:
        """The item table without the padding and ``[MASK]`` rows: (n_items, dim)."""
        return self.item_embedding.weight[1 : self.mask_token]


class BERT4Rec(SequentialRecommender):
    """A bidirectional transformer trained with the cloze objective (Sun et al. 2019)."""

    class Config(SASRec.Config):
        dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on embeddings and hidden layers.")
        mask_probability: float = Field(
            0.2,
            gt=0,
            lt=1,
            description="Chance that each item of a training window is masked (the last always).",
        )
        last_only_fraction: float = Field(
            0.0,
            ge=0,
            le=1,
            description="Share of training windows in which only the last item is masked (the paper's next-item "
            "samples; RecBole's ft_ratio).",
        )

    config: Config

    def default_trainer(self) -> TrainerConfig:
        return TrainerConfig(epochs=400, batch_size=128, learning_rate=1e-3, optimizer="adam", patience=20)

    def build_module(self, n_users: int, n_items: int) -> BidirectionalEncoder:
        config = self.config
        return BidirectionalEncoder(
            n_items, config.dim, config.max_length, config.layers, config.heads, config.dropout
        )

    @property
    def mask_token(self) -> int:
        """The index of ``[MASK]`` in sequences (items are index + 1, padding 0)."""
        return self.n_items + 1

    # -- the example protocol: cloze windows ------------------------------------------------------------------
    def training_examples(self, dataset: Dataset) -> dict[str, torch.Tensor]:
        """Windows of ``max_length`` consecutive items covering every user's training sequence."""
        self.catalogue_size = dataset.n_items
        return sequence_windows(dataset.sequences(), self.config.max_length - 1)

    def collate(
        self, examples: dict[str, torch.Tensor], generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """Windows with items masked at random (and the last always): ``inputs``, and ``targets`` holding the
        original item at masked positions and :data:`PAD` elsewhere; uniform negatives for the sampled losses."""
        windows = examples["sequences"]
        real = windows != PAD
        masked = (torch.rand(windows.shape, generator=generator) < self.config.mask_probability) & real
        last_only = torch.rand(len(windows), generator=generator) < self.config.last_only_fraction
        masked[last_only] = False
        masked[:, -1] = real[:, -1]
        batch = {
            "inputs": windows.masked_fill(masked, self.mask_token),
            "targets": windows.masked_fill(~masked, PAD),
        }
        if self.config.loss != "softmax":
            rows, length = windows.shape
            negatives = uniform_negatives(
                rows * length, self.catalogue_size, self.config.negatives, generator
            )
            batch["negatives"] = negatives.view(rows, length, self.config.negatives)
        return batch

    def training_states(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The states of every position and a mask of the masked ones (those with a target)."""
        return self.encoder.states(batch["inputs"]), batch["targets"] != PAD

    # -- scoring ---------------------------------------------------------------------------------------------
    def score_sequences(self, inputs: torch.Tensor) -> torch.Tensor:
        """Scores read at a ``[MASK]`` appended to each left-padded sequence (its oldest item dropped)."""
        queries = torch.cat([inputs[:, 1:], torch.full_like(inputs[:, :1], self.mask_token)], dim=1)
        queries[(inputs == PAD).all(1)] = PAD  # an empty history stays empty: the popularity fallback
        return super().score_sequences(queries)
