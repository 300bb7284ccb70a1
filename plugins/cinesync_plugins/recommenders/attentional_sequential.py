"""NARM: neural attentive session-based recommendation.

Li, Ren, Chen, Ren, Lian & Ma, "Neural Attentive Session-based Recommendation", CIKM 2017.

The input is a user's last ``max_length`` items (or an anonymous session's items). Item embeddings with dropout
(``embedding_dropout``) feed a GRU of width ``dim`` (:class:`._recurrent.RecurrentLayer`), giving hidden states
``h_1 … h_t``. NARM combines two views of them:

* the global encoder, the last hidden state ``c_g = h_t`` (the whole sequence's summary);
* the local encoder, an attention over every hidden state keyed by the last one:
  ``α_tj = softmax_j(v · σ(A₁ h_t + A₂ h_j))`` over the real positions ``j ≤ t``, and ``c_l = Σ_j α_tj h_j``.

The representation ``c_t = [c_g; c_l]`` goes through dropout (``dropout``) and the paper's bilinear decoder: the
score of item ``i`` is ``E_i · B c_t`` with the item embedding table ``E`` and a learned ``B`` (dim × 2·dim).
One deviation: the paper leaves the weights ``α`` unnormalised; here they are a softmax over the real positions,
so that padding never contributes and ``c_l`` is an average of hidden states whatever the sequence length.

Training (``train_positions``). NARM was trained on the last item of every prefix of a session (one forward pass
per target). With ``"all"`` (the default) the shared windows of :mod:`._sequential` are used instead, and every
position ``t`` of a window predicts its next item with its own ``c_t``: the attention of position ``t`` sees the
hidden states ``≤ t`` only (a causal mask), so the representation at ``t`` is exactly the one NARM computes for
the prefix ending at ``t``, and one pass trains every prefix of the window. It costs an attention tensor of size
``(batch, max_length, max_length, dim)``, which is one reason ``max_length`` is kept at 20. With ``"last"`` only the
last position of each window is trained (one target per window, as the paper's loss on one prefix). On ml-100k
validation (``max_length`` 50, default trainer) ``"all"`` scored NDCG@10 0.1021 against 0.0334 for ``"last"``:
under ``"last"`` a window of ``max_length`` items yields one target instead of ``max_length``, so an epoch sees
about 2% of the targets and early stopping ends training before the model has learnt much.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from cinesync.train.trainer import TrainerConfig
from cinesync_plugins.recommenders._recurrent import RecurrentLayer
from cinesync_plugins.recommenders._sequential import (
    PAD,
    SequenceEncoder,
    SequentialConfig,
    SequentialRecommender,
    next_item_loss,
)


def causal_key_mask(inputs: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Boolean ``(B, T, L)`` mask, True where query position ``queries[q]`` may attend to key position ``j``.

    A query at ``t`` sees the real positions ``j ≤ t`` of the left-padded ``inputs`` (B, L); a padding query,
    which would see none, sees itself, so that its softmax is defined (its output is never used).
    """
    length = inputs.shape[1]
    keys = torch.arange(length, device=inputs.device)
    causal = keys.unsqueeze(0) <= queries.unsqueeze(1)  # (T, L)
    real = (inputs != PAD).unsqueeze(1)  # (B, 1, L)
    allowed = causal & real
    itself = (keys.unsqueeze(0) == queries.unsqueeze(1)) & ~allowed.any(-1, keepdim=True)
    return allowed | itself


class NARMEncoder(SequenceEncoder):
    """A GRU over the item embeddings, NARM's local attention keyed by each state, and the bilinear decoder."""

    def __init__(self, n_items: int, dim: int, embedding_dropout: float, dropout: float) -> None:
        super().__init__(n_items, dim)
        self.embedding_dropout = nn.Dropout(embedding_dropout)
        self.recurrent = RecurrentLayer(dim, dim, "gru")
        self.attention_query = nn.Linear(dim, dim, bias=False)  # A₁
        self.attention_key = nn.Linear(dim, dim, bias=False)  # A₂
        self.attention_energy = nn.Linear(dim, 1, bias=False)  # v
        self.context_dropout = nn.Dropout(dropout)
        self.decoder = nn.Linear(2 * dim, dim, bias=False)  # B

    def hidden_states(self, inputs: torch.Tensor) -> torch.Tensor:
        """The GRU's hidden state after each position (B, L, dim), zero at padding."""
        return self.recurrent(self.embedding_dropout(self.item_embedding(inputs)), inputs)

    def attention_weights(
        self, hidden: torch.Tensor, inputs: torch.Tensor, queries: torch.Tensor
    ) -> torch.Tensor:
        """``α`` (B, T, L) of the query positions ``queries`` (T,) over the hidden states ``hidden`` (B, L, dim)."""
        query = self.attention_query(hidden[:, queries]).unsqueeze(2)  # (B, T, 1, dim)
        key = self.attention_key(hidden).unsqueeze(1)  # (B, 1, L, dim)
        energies = self.attention_energy(torch.sigmoid(query + key)).squeeze(-1)  # (B, T, L)
        mask = causal_key_mask(inputs, queries)
        return torch.softmax(energies.masked_fill(~mask, float("-inf")), dim=-1)

    def representation(self, inputs: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """The decoded ``B c_t`` (B, T, dim) at the positions ``queries`` (T,)."""
        hidden = self.hidden_states(inputs)
        local = self.attention_weights(hidden, inputs, queries) @ hidden  # (B, T, dim)
        context = torch.cat([hidden[:, queries], local], dim=-1)
        return self.decoder(self.context_dropout(context))

    def states(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.representation(inputs, torch.arange(inputs.shape[1], device=inputs.device))

    def final(self, inputs: torch.Tensor) -> torch.Tensor:
        last = torch.tensor([inputs.shape[1] - 1], device=inputs.device)
        return self.representation(inputs, last)[:, 0]


class AttentionalSequential(SequentialRecommender):
    """NARM (Li et al. 2017): a GRU's last state plus attention over all its states, bilinearly decoded."""

    class Config(SequentialConfig):
        # ml-100k validation NDCG@10 (default trainer at learning rate 1e-3): 20 items 0.1111, 50 items 0.1021, and 20
        # items train in half the time (the attention is quadratic in the length).
        max_length: int = Field(
            20, ge=2, description="Most recent items a history or session is cut to (attention is quadratic)."
        )
        embedding_dropout: float = Field(
            0.25, ge=0, lt=1, description="Dropout on the input item embeddings (the paper's 0.25)."
        )
        dropout: float = Field(
            0.5,
            ge=0,
            lt=1,
            description="Dropout on [c_g; c_l] before the bilinear decoder (the paper's 0.5).",
        )
        train_positions: Literal["all", "last"] = Field(
            "all",
            description="'all': every position of a window predicts its next item (causal attention); 'last': "
            "only the last position of each window does.",
        )

    config: Config

    @property
    def narm(self) -> NARMEncoder:
        module = self.trained_module
        assert isinstance(module, NARMEncoder)
        return module

    def default_trainer(self) -> TrainerConfig:
        # ml-100k validation NDCG@10 (max_length 20): learning rate 3e-3 gave 0.1241 with dropout 0.5 and 0.1229
        # with 0.25; 1e-3 gave 0.1111 and 0.1115. Each fit took 3-4 minutes on a loaded 2-core machine.
        return TrainerConfig(epochs=100, batch_size=128, learning_rate=3e-3, optimizer="adam", patience=5)

    def build_module(self, n_users: int, n_items: int) -> NARMEncoder:
        config = self.config
        return NARMEncoder(n_items, config.dim, config.embedding_dropout, config.dropout)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The base's all-positions loss, or with ``train_positions = "last"`` the last position's only."""
        if self.config.train_positions == "all":
            return super().loss(batch)
        negatives = batch["negatives"][:, -1] if "negatives" in batch else None
        states = self.narm.final(batch["inputs"])
        targets = batch["targets"][:, -1] - 1  # every window ends on a real item
        return next_item_loss(self.config, states, targets, self.narm.output_weights(), negatives)
