"""SASRec with item genres and time intervals between interactions (TiSASRec-style).

Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018, extended with two signals:

* **Item genres.** Each item's representation is its own embedding plus the mean of its genres' embeddings
  (genres from the catalogue's ``genres`` column, MovieLens ``"A|B"`` strings or lists; an item without genres
  has a "no genre" token), ``R_i = E_i + mean_g G_g``. ``R`` replaces ``E`` both as the input (scaled by ``√dim``
  plus the position embedding, as SASRec) and as the output item table, so items that share genres share part
  of their representation, which helps items with few interactions. The item-to-genre index matrix is a buffer
  of the module: a saved model reloads without the catalogue.
* **Time intervals**, after Li, Wang & McAuley, "Time Interval Aware Self-Attention for Sequential
  Recommendation" (TiSASRec), WSDM 2020. The interval between the items at positions ``i`` and ``j`` is
  bucketed on a log scale, ``b = 1 + min(⌊log2(1 + |t_i - t_j| / 60 s)⌋, interval_buckets - 2)`` (bucket 1 is
  under a minute, 7 about an hour, 11 a day, 16 a month, 20 a year), and bucket 0 means "unknown". Where
  TiSASRec adds interval embeddings to the keys and values and scales intervals by each user's smallest one,
  here each block and head learns a scalar attention bias per bucket (initialised to 0, so training starts
  from SASRec), added to the attention logits before the softmax, as T5's relative position biases are. Log
  buckets rather than per-user scaling: MovieLens users rate many films within seconds, which makes a user's
  smallest interval a poor unit.

Anonymous sessions (``recommend(sessions=...)``) have no times: every pair of positions falls in the unknown
bucket, and a bias that every key of a query shares cancels in the softmax, so a session is attended to as
plain SASRec with genres would (the same holds for a history whose items are all within one bucket).

Training windows carry each item's timestamp (the order is ``Dataset.sequences``'s: by user, then timestamp,
ties in source order), and the last ``max_length`` training timestamps of each user are kept next to their
items in the model's state. The encoder is :mod:`._transformer`'s with learned positions, which computes
SASRec's; ``genres`` and ``time_intervals`` switch either extra off (both off: SASRec).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from pydantic import Field
from torch import nn

from cinesync.train.trainer import TrainerConfig
from cinesync_plugins.recommenders._neural import PADDING_GENRE, genre_vocabulary_size, padded_genre_ids
from cinesync_plugins.recommenders._sequential import (
    PAD,
    SequentialRecommender,
    left_padded,
    sequence_windows,
)
from cinesync_plugins.recommenders._transformer import TransformerSequenceEncoder
from cinesync_plugins.recommenders.sasrec import SASRec

if TYPE_CHECKING:
    from collections.abc import Sequence

    from cinesync.data.dataset import Dataset
    from cinesync.interfaces import ComponentConfig

#: The timestamp of padding and of items whose time is unknown (session items).
UNKNOWN_TIME = -1
#: The interval bucket of a pair of positions of which at least one has no time.
UNKNOWN_INTERVAL = 0


def time_sequences(dataset: Dataset) -> list[np.ndarray]:
    """Each user's timestamps in the order of ``dataset.sequences()`` (user, then time, ties in source order)."""
    frame = dataset.interactions.sort_values(["user", "timestamp"], kind="stable")
    users = frame["user"].to_numpy(np.int64)
    times = frame["timestamp"].to_numpy(np.int64)
    bounds = np.searchsorted(users, np.arange(dataset.n_users + 1))
    return [times[bounds[u] : bounds[u + 1]] for u in range(dataset.n_users)]


def left_padded_times(sequences: Sequence[np.ndarray], length: int) -> torch.Tensor:
    """The last ``length`` timestamps of each sequence, left-padded with :data:`UNKNOWN_TIME`: (N, length).

    Aligned with ``left_padded`` of the matching item sequences (which stores value + 1 and pads with 0).
    """
    return left_padded(sequences, length) - 1


def interval_buckets(times: torch.Tensor, buckets: int) -> torch.Tensor:
    """Log-scale bucket of the interval between every two positions of ``times`` (B, L): (B, L, L) int64.

    ``1 + min(⌊log2(1 + |Δt| / 60)⌋, buckets - 2)`` for two known times (seconds), :data:`UNKNOWN_INTERVAL`
    where either time is :data:`UNKNOWN_TIME`.
    """
    # Subtract in int64: float32 cannot hold a Unix time to the second.
    delta = (times.unsqueeze(2) - times.unsqueeze(1)).abs().float()
    known = torch.log2(1.0 + delta / 60.0).floor().clamp(max=buckets - 2).long() + 1
    unknown = (times < 0).unsqueeze(2) | (times < 0).unsqueeze(1)
    return known.masked_fill(unknown, UNKNOWN_INTERVAL)


class TimeAndGenreEncoder(TransformerSequenceEncoder):
    """SASRec's encoder (learned positions) with genre-aware item representations and per-bucket
    time-interval attention biases."""

    def __init__(
        self,
        n_items: int,
        dim: int,
        max_length: int,
        layers: int,
        heads: int,
        dropout: float,
        item_genre_ids: torch.Tensor | None,
        interval_buckets: int | None,
    ) -> None:
        super().__init__(n_items, dim, max_length, layers, heads, dropout, positions="learned")
        self.genre_embedding: nn.EmbeddingBag | None = None
        if item_genre_ids is not None:
            self.register_buffer("item_genre_ids", item_genre_ids.clone())
            self.genre_embedding = nn.EmbeddingBag(
                genre_vocabulary_size(item_genre_ids), dim, mode="mean", padding_idx=PADDING_GENRE
            )
            nn.init.normal_(self.genre_embedding.weight, std=dim**-0.5)
            with torch.no_grad():
                self.genre_embedding.weight[PADDING_GENRE].zero_()
        self.interval_bias: nn.Embedding | None = None
        if interval_buckets is not None:
            self.interval_buckets = interval_buckets
            self.interval_bias = nn.Embedding(interval_buckets, layers * heads)
            nn.init.zeros_(self.interval_bias.weight)

    def genre_features(self) -> torch.Tensor:
        """Each item's mean genre embedding, with a zero row for padding first: (n_items + 1, dim)."""
        assert self.genre_embedding is not None
        genres = self.genre_embedding(self.get_buffer("item_genre_ids"))
        return torch.cat([genres.new_zeros(1, genres.shape[1]), genres])

    def item_representations(self) -> torch.Tensor:
        """``E_i + mean genre embedding`` of every item, padding row (zero) first: (n_items + 1, dim)."""
        if self.genre_embedding is None:
            return self.item_embedding.weight
        return self.item_embedding.weight + self.genre_features()

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        hidden = super().embed(inputs)
        if self.genre_embedding is not None:
            hidden = hidden + self.genre_features()[inputs] * self.scale
        return hidden

    def output_weights(self) -> torch.Tensor:
        return self.item_representations()[1:]

    def attention_masks(self, inputs: torch.Tensor, times: torch.Tensor | None) -> list[torch.Tensor]:
        """Each block's attention mask: the causal one, plus, with intervals, each head's learned bias for the
        interval bucket of every (query, key) pair, as an additive (B, heads, L, L) mask (-inf where blocked)."""
        allowed = self.causal_mask(inputs)
        if self.interval_bias is None:
            return [allowed] * len(self.blocks)
        if times is None:
            times = torch.full_like(inputs, UNKNOWN_TIME)
        batch, length = inputs.shape
        # (B, L, L, blocks·heads) -> per block (B, heads, L, L).
        biases = self.interval_bias(interval_buckets(times, self.interval_buckets))
        biases = biases.view(batch, length, length, len(self.blocks), self.heads).permute(3, 0, 4, 1, 2)
        return [bias.masked_fill(~allowed, -math.inf) for bias in biases]

    def states(self, inputs: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states (B, L, d) of left-padded items ``inputs`` with timestamps ``times`` (None: unknown)."""
        return self.encode(inputs, self.attention_masks(inputs, times))

    def final(self, inputs: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
        return self.states(inputs, times)[:, -1]


class EnhancedSASRec(SequentialRecommender):
    """SASRec whose items carry their genres and whose attention knows the time between interactions."""

    requires: ClassVar[frozenset[str]] = frozenset({"timestamps", "item_genres"})

    class Config(SASRec.Config):
        genres: bool = Field(True, description="Add the mean of an item's genre embeddings to its embedding.")
        time_intervals: bool = Field(
            True, description="Learn an attention bias per (block, head, log-scale time-interval bucket)."
        )
        interval_buckets: int = Field(
            24,
            ge=3,
            description="Interval buckets, 'unknown' included: bucket b ≥ 1 holds ⌊log2(1 + Δt / 1 min)⌋ = b - 1, "
            "the last bucket everything longer.",
        )

    config: Config

    def __init__(self, config: ComponentConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        #: Each item's genre ids (see ``padded_genre_ids``), read from the catalogue by fit or from the artifact.
        self.item_genre_ids: torch.Tensor | None = None
        #: The timestamps of :attr:`history`, :data:`UNKNOWN_TIME` where it is padded: (n_users, max_length).
        self.history_times: torch.Tensor | None = None

    @property
    def encoder(self) -> TimeAndGenreEncoder:
        module = self.trained_module
        assert isinstance(module, TimeAndGenreEncoder)
        return module

    def default_trainer(self) -> TrainerConfig:
        # SASRec's settings (sasrec.py), so that the two compare like for like.
        return TrainerConfig(epochs=200, batch_size=256, learning_rate=3e-3, optimizer="adam", patience=10)

    def build_module(self, n_users: int, n_items: int) -> TimeAndGenreEncoder:
        config = self.config
        if config.genres and self.item_genre_ids is None:
            raise RuntimeError(f"{type(self).__name__}.build_module needs item genres: fit or load the model")
        return TimeAndGenreEncoder(
            n_items,
            config.dim,
            config.max_length,
            config.layers,
            config.heads,
            config.dropout,
            self.item_genre_ids if config.genres else None,
            config.interval_buckets if config.time_intervals else None,
        )

    def _fit(self, dataset: Dataset, *, validation: Dataset | None, trainer: Any) -> None:
        self.item_genre_ids = padded_genre_ids(dataset) if self.config.genres else None
        self.history_times = left_padded_times(time_sequences(dataset), self.config.max_length)
        super()._fit(dataset, validation=validation, trainer=trainer)

    # -- the example protocol: windows with their timestamps ---------------------------------------------------
    def training_examples(self, dataset: Dataset) -> dict[str, torch.Tensor]:
        """SASRec's windows plus ``times``, each window's timestamps (:data:`UNKNOWN_TIME` where padded)."""
        examples = super().training_examples(dataset)
        # The windows' boundaries depend on the sequence lengths only, so cutting the time sequences the same way
        # aligns them with the item windows (stored as value + 1, padding 0, hence the - 1).
        times = sequence_windows(time_sequences(dataset), self.config.max_length)["sequences"] - 1
        return {**examples, "times": times}

    def collate(
        self, examples: dict[str, torch.Tensor], generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        return {**super().collate(examples, generator), "input_times": examples["times"][:, :-1]}

    def training_states(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = batch["inputs"], batch["targets"]
        return self.encoder.states(inputs, batch["input_times"]), (inputs != PAD) & (targets != PAD)

    # -- scoring ---------------------------------------------------------------------------------------------
    def score_sequences(self, inputs: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of every item after each left-padded sequence ``(B, max_length)`` with its timestamps ``times``
        (None: unknown, as for sessions); rows without any item get the base class's popularity fallback."""
        device = self.device
        inputs = inputs.to(device)
        empty = (inputs == PAD).all(1)
        if empty.all():
            return super().score_sequences(inputs)
        times = torch.full_like(inputs, UNKNOWN_TIME) if times is None else times.to(device)
        encoder = self.encoder
        scores = torch.empty(len(inputs), self.n_items, device=device)
        real = ~empty
        scores[real] = (encoder.final(inputs[real], times[real]) @ encoder.output_weights().t()).float()
        if empty.any():
            scores[empty] = super().score_sequences(inputs[empty])
        return scores

    def score(
        self, users: torch.Tensor, items: torch.Tensor | None = None, context: Any = None
    ) -> torch.Tensor:
        if self.history is None or self.history_times is None:
            return super().score(users, items, context)  # raises the not-fitted error
        rows = users.cpu().long()
        scores = self.score_sequences(self.history[rows], self.history_times[rows]).cpu()
        return scores if items is None else scores[:, items.cpu().long()]

    # -- persistence -----------------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        assert self.history_times is not None
        return {**super().state_tensors(), "history_times": self.history_times.contiguous()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        tensors = dict(tensors)
        self.history_times = tensors.pop("history_times")
        self.item_genre_ids = tensors.get("item_genre_ids")
        super().load_state_tensors(tensors)
