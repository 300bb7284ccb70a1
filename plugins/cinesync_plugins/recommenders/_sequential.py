"""What the sequential (next-item) recommenders share: histories, training windows, next-item losses, scoring.

A sequential model reads a user's interactions ordered by time (ties in source order, as the splits keep them)
and predicts the next item. Item indices are shifted by one inside sequences so that 0 is padding; sequences are
**left-padded**, so the most recent item is always the last position.

* Training examples are windows of ``max_length + 1`` consecutive items cut from the end of each user's training
  sequence backwards (a user with more items than that gives several windows), so every interaction is a target
  once per epoch: the input is ``window[:-1]`` and the target at each position is the next item. This is the
  "all positions" objective of SASRec (Kang & McAuley 2018) rather than RecBole's one-target-per-prefix
  augmentation, and costs one forward pass per window.
* Losses (``config.loss``): ``softmax``, the full cross-entropy over the catalogue; ``bce``, SASRec's original
  one-negative binary cross-entropy (set ``negatives = 1``); ``gbce``, gSASRec's calibrated BCE over many
  negatives (Petrov & Macdonald 2023); ``sampled_softmax``, cross-entropy against uniform negatives. Negatives
  are drawn uniformly for every target position; the binary losses shift logits by ``-log n`` during training
  (see :func:`next_item_loss`).
* Scoring a known user runs the encoder on their last ``max_length`` training items (kept in the model's state,
  so artifacts score without the data); scoring an anonymous session runs it on the session's items. The output
  is one matrix product with the item table for all items at once.

A model subclasses :class:`SequentialRecommender` and builds a :class:`SequenceEncoder`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional

from cinesync.errors import CineSyncError
from cinesync.interfaces import ComponentConfig
from cinesync.train.torch_model import TorchRecommender
from cinesync_plugins.layers import gbce_loss, sampled_softmax_loss, uniform_negatives

if TYPE_CHECKING:
    from collections.abc import Sequence

    from cinesync.data.dataset import Dataset

#: The padding item (item index + 1 is stored in sequences).
PAD = 0

NextItemLoss = Literal["softmax", "bce", "gbce", "sampled_softmax"]


class SequentialConfig(ComponentConfig):
    """Hyper-parameters every sequential model has; a model's ``Config`` extends it."""

    max_length: int = Field(50, ge=2, description="Most recent items a history or session is cut to.")
    dim: int = Field(64, ge=1, description="Size of item embeddings and hidden states.")
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout on embeddings and hidden layers.")
    loss: NextItemLoss = Field(
        "softmax",
        description="'softmax' (full cross-entropy), 'bce' (one negative per target, as SASRec), 'gbce' "
        "(gSASRec) or 'sampled_softmax'.",
    )
    negatives: int = Field(
        1, ge=1, description="Uniform negatives per target for 'bce', 'gbce' and 'sampled_softmax'."
    )
    gbce_calibration: float = Field(
        0.75, ge=0, le=1, description="gBCE's t: 0 is plain BCE, 1 fully calibrated (gSASRec's 0.75)."
    )


def left_padded(sequences: Sequence[np.ndarray], length: int) -> torch.Tensor:
    """The last ``length`` items of each sequence, shifted by one and left-padded with :data:`PAD`: (N, length)."""
    out = np.zeros((len(sequences), length), np.int64)
    for row, sequence in enumerate(sequences):
        tail = np.asarray(sequence, np.int64)[-length:]
        if len(tail):
            out[row, length - len(tail) :] = tail + 1
    return torch.from_numpy(out)


def sequence_windows(sequences: Sequence[np.ndarray], length: int) -> dict[str, torch.Tensor]:
    """Windows of ``length + 1`` consecutive items covering each sequence, cut from its end backwards.

    Consecutive windows of a user overlap by one item (the last input of one is the first of the next), so every
    item but each user's first is a target exactly once. Returns ``{"sequences": (W, length + 1) shifted and
    left-padded, "users": (W,), "lengths": (W,) real items per window}``.
    """
    rows: list[np.ndarray] = []
    users: list[int] = []
    for user, sequence in enumerate(sequences):
        end = len(sequence)
        while end > 1:
            start = max(0, end - length - 1)
            rows.append(np.asarray(sequence[start:end], np.int64))
            users.append(user)
            end = start + 1
    windows = left_padded(rows, length + 1)
    return {
        "sequences": windows,
        "users": torch.tensor(users, dtype=torch.int64),
        "lengths": (windows != PAD).sum(1),
    }


class SequenceEncoder(nn.Module):
    """Base of the sequence encoders: an item table whose row 0 is padding, and hidden states per position.

    ``states(inputs)`` maps left-padded shifted item ids ``(B, L)`` to hidden states ``(B, L, dim)`` in which
    position ``t`` depends on the items up to ``t`` only (causal); ``final(inputs)`` is the state after the last
    item, the user's representation. Output scores are dot products with :meth:`output_weights`, the item table
    without its padding row (input and output embeddings are shared, as in SASRec and GRU4Rec's tied variant).
    """

    def __init__(self, n_items: int, dim: int) -> None:
        super().__init__()
        self.item_embedding = nn.Embedding(n_items + 1, dim, padding_idx=PAD)
        nn.init.normal_(self.item_embedding.weight, std=dim**-0.5)
        with torch.no_grad():
            self.item_embedding.weight[PAD].zero_()

    def states(self, inputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement states(inputs)")

    def final(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.states(inputs)[:, -1]

    def output_weights(self) -> torch.Tensor:
        return self.item_embedding.weight[1:]


def next_item_loss(
    config: SequentialConfig,
    states: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    negatives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean ``config.loss`` of hidden ``states`` (N, d) predicting item indices ``targets`` (N,) over the item
    table ``weights`` (n_items, d). The sampled losses need ``negatives`` (N, n), item indices drawn per target."""
    if config.loss == "softmax":
        return functional.cross_entropy(states @ weights.t(), targets)
    assert negatives is not None, f"loss {config.loss!r} needs negatives"
    positive_logits = (states * weights[targets]).sum(-1)
    negative_logits = torch.einsum("nd,nkd->nk", states, weights[negatives])
    if config.loss == "sampled_softmax":
        return sampled_softmax_loss(positive_logits, negative_logits)
    calibration = config.gbce_calibration if config.loss == "gbce" else 0.0
    # The binary losses see every logit shifted by -log n (n negatives per target), the log-odds of one
    # candidate among n + 1 equally likely ones: an untrained model then gives each negative σ ≈ 1 / (n + 1)
    # instead of 1/2. Without it, n negatives at 1/2 swamp the first updates and training settles far lower:
    # SASRec with 128 negatives reached validation NDCG@10 0.035 (lr 1e-3 or 3e-3, dropout 0 or 0.2) against
    # 0.087 with the shift after the same 150 s on ml-100k (docs/models/sequential.md). With one negative
    # (SASRec's BCE) the shift is 0. Ranking is unaffected: scores are the unshifted dot products.
    shift = math.log(negatives.shape[-1])
    return gbce_loss(positive_logits - shift, negative_logits - shift, len(weights), calibration)


class SequentialRecommender(TorchRecommender):
    """A next-item model over users' time-ordered histories; also scores anonymous sessions.

    Subclasses implement ``build_module(n_users, n_items)`` returning a :class:`SequenceEncoder`, and may
    override :meth:`training_states` (which positions' states the loss sees) or the example protocol (BERT4Rec's
    cloze batches). A user with no training history (possible only for users added to the id map without
    interactions) is scored by training popularity, the documented fallback; a session must hold at least one
    item.
    """

    requires: ClassVar[frozenset[str]] = frozenset({"timestamps"})
    supports_sessions: ClassVar[bool] = True
    config: SequentialConfig

    def __init__(self, config: ComponentConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        #: Each user's last ``max_length`` training items, shifted and left-padded: (n_users, max_length).
        self.history: torch.Tensor | None = None
        self.catalogue_size = 0

    @property
    def encoder(self) -> SequenceEncoder:
        module = self.trained_module
        assert isinstance(module, SequenceEncoder)
        return module

    def _fit(self, dataset: Dataset, *, validation: Dataset | None, trainer: Any) -> None:
        self.history = left_padded(dataset.sequences(), self.config.max_length)
        super()._fit(dataset, validation=validation, trainer=trainer)

    # -- the example protocol ------------------------------------------------------------------------------
    def training_examples(self, dataset: Dataset) -> dict[str, torch.Tensor]:
        """Windows of ``max_length + 1`` items covering every user's training sequence (see module docstring)."""
        self.catalogue_size = dataset.n_items
        return sequence_windows(dataset.sequences(), self.config.max_length)

    def collate(
        self, examples: dict[str, torch.Tensor], generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """Inputs and next-item targets of each window, with uniform negatives for the sampled losses."""
        windows = examples["sequences"]
        batch = {"inputs": windows[:, :-1], "targets": windows[:, 1:]}
        if self.config.loss != "softmax":
            rows, length = batch["targets"].shape
            negatives = uniform_negatives(
                rows * length, self.catalogue_size, self.config.negatives, generator
            )
            batch["negatives"] = negatives.view(rows, length, self.config.negatives)
        return batch

    def training_states(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The hidden states the loss trains and a mask of the positions that have an input and a target."""
        inputs, targets = batch["inputs"], batch["targets"]
        return self.encoder.states(inputs), (inputs != PAD) & (targets != PAD)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean next-item loss over every position with a real input and target."""
        states, mask = self.training_states(batch)
        weights = self.encoder.output_weights()
        targets = batch["targets"][mask] - 1
        negatives = batch["negatives"][mask] if "negatives" in batch else None
        return next_item_loss(self.config, states[mask], targets, weights, negatives)

    # -- scoring -------------------------------------------------------------------------------------------
    def score_sequences(self, inputs: torch.Tensor) -> torch.Tensor:
        """Scores of every item after each left-padded shifted sequence ``(B, max_length)``: (B, n_items).

        Rows without any item get the training popularity (log counts) instead.
        """
        encoder = self.encoder
        device = self.device
        inputs = inputs.to(device)
        empty = (inputs == PAD).all(1)
        scores = torch.empty(len(inputs), self.n_items, device=device)
        if (~empty).any():
            scores[~empty] = (encoder.final(inputs[~empty]) @ encoder.output_weights().t()).float()
        if empty.any():
            assert self._item_counts is not None
            popularity = torch.log1p(torch.from_numpy(self._item_counts).float()).to(device)
            scores[empty] = popularity
        return scores

    def score(
        self, users: torch.Tensor, items: torch.Tensor | None = None, context: Any = None
    ) -> torch.Tensor:
        if self.history is None:
            self._check_fitted()
            raise CineSyncError(f"{type(self).__name__} has no user histories: fit it or load an artifact")
        scores = self.score_sequences(self.history[users.cpu().long()]).cpu()
        return scores if items is None else scores[:, items.cpu().long()]

    def score_sessions(self, sessions: Sequence[np.ndarray]) -> torch.Tensor:
        """Scores after each session of item indices (time order); its last ``max_length`` items are read."""
        self._check_fitted()
        if any(len(session) == 0 for session in sessions):
            raise CineSyncError("a session needs at least one item")
        return self.score_sequences(left_padded(sessions, self.config.max_length)).cpu()

    # -- persistence ---------------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        assert self.history is not None
        return {**super().state_tensors(), "history": self.history.contiguous()}

    def n_parameters(self) -> int:
        """Learned parameters only: the stored histories are data, not parameters."""
        return sum(p.numel() for p in self.trained_module.parameters())

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        tensors = dict(tensors)
        self.history = tensors.pop("history")
        super().load_state_tensors(tensors)
