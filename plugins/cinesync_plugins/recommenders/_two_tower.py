"""What the two-tower models (``two_tower``, ``enhanced_two_tower``, ``multitask_two_tower``,
``collaborative_two_tower``) share beyond :mod:`cinesync_plugins.layers`.

A two-tower model maps a user and an item to vectors independently of each other and scores the pair by
``score(u, i) = f(u) · g(i) / τ``, with ``f(u)`` and ``g(i)`` L2-normalised and ``τ`` a learned temperature.
Scoring every item for a batch of users is one matrix product, and the item vectors can be computed once.

* :class:`TwoTowerConfig`: the hyper-parameters every tower model has (sizes, the user's history, the
  temperature, the log-q correction, mixed negatives).
* :class:`TwoTowerNetwork`: the module base. It holds the inputs the towers read besides ids, as buffers saved
  with the weights: ``item_features`` ``(n_items, F)`` (the catalogue's genres as a multi-hot matrix, ``F = 0``
  when the catalogue has none) and ``user_history`` ``(n_users, history_length)`` (each user's most recent
  training items, :data:`NO_ITEM` padding), plus the learned log-temperature. A subclass implements
  ``user_tower`` and ``item_tower``; the base normalises them (``user_embeddings``, ``item_embeddings``).
* :class:`TwoTowerRecommender`: the training protocol: every distinct training pair once, and the in-batch
  sampled softmax of Yi et al., "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
  Recommendations", RecSys 2019 (:func:`~cinesync_plugins.layers.in_batch_softmax_loss`): each user's
  positive against the batch's other positives, the logits corrected by ``log_q_weight`` times the log of each
  candidate's probability of being in the batch (its share of the training pairs), accidental hits (the
  user's own positive elsewhere in the batch) masked. With ``uniform_negatives > 0`` every row also draws that
  many uniform random items, shared as negatives by the whole batch (mixed negative sampling, Yang et al., WWW
  2020), and ``q`` is then the mixture of the two proposals. The features and histories are computed at fit
  time, so a saved model scores without its dataset.

During training a user's history never contains the item being predicted (it is masked out of the user's
history for that example), so the user tower learns which items go with the others, not that a user's own
items score high.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional

from cinesync.errors import CineSyncError
from cinesync.interfaces import ComponentConfig
from cinesync.train.torch_model import TorchRecommender
from cinesync_plugins.layers import (
    in_batch_softmax_loss,
    init_embedding,
    interaction_pairs,
    mlp,
    uniform_negatives,
)

if TYPE_CHECKING:
    from cinesync.data.dataset import Dataset
    from cinesync.train.trainer import TrainerConfig

#: Padding in a row of ``user_history``.
NO_ITEM = -1
#: The learned temperature stays in this range (clamped, as CLIP clamps its logit scale): below it the logits
#: of unit vectors would reach 100 and the softmax saturate; above it no item could stand out.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 1.0


class TwoTowerConfig(ComponentConfig):
    """The hyper-parameters every two-tower model has."""

    # Defaults from ``two_tower`` on ml-100k's validation split (NDCG@10, Adam at 1e-3, one fit each; the
    # validation standard error is about 0.006): dropout 0.2 scored 0.0783 against 0.0705 without and 0.0708 at
    # 0.4; the full log-q correction 0.0705 against 0.0497 at half and 0.0257 without (uncorrected, the
    # in-batch softmax pushes popular items down, and leave-last-out rewards them); 100 history items 0.0705
    # against 0.0693 for 30 and 0.0707 for 300; one uniform negative per example (mixed negative sampling)
    # 0.0656, so it is off; one 64-wide layer 0.0654 against 0.0705 for [128, 64].
    dim: int = Field(64, ge=1, description="Size of the id embeddings and of the feature projection.")
    layers: list[int] = Field(
        default_factory=lambda: [128, 64],
        min_length=1,
        description="Sizes of each tower's MLP layers (ReLU between them); the last is the output size.",
    )
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout after each hidden layer of the towers.")
    history_length: int = Field(
        100, ge=0, description="Most recent training items of a user that the user tower reads; 0 for none."
    )
    temperature: float = Field(
        0.1,
        ge=MIN_TEMPERATURE,
        le=MAX_TEMPERATURE,
        description="Initial softmax temperature τ of the normalised dot product.",
    )
    learn_temperature: bool = Field(True, description="Learn τ (as log τ, clamped to [0.01, 1]).")
    log_q_weight: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Multiplier of the log-q correction: 1 is Yi et al.'s full correction, 0 none.",
    )
    uniform_negatives: int = Field(
        0, ge=0, description="Uniform random items each example adds to the batch's shared negatives."
    )


# -- inputs computed at fit time ----------------------------------------------------------------------------
def item_feature_matrix(dataset: Dataset) -> tuple[torch.Tensor, list[str]]:
    """The catalogue's genres as a multi-hot ``(n_items, n_genres)`` float matrix and its sorted vocabulary.

    A catalogue without genres gives a matrix with no columns (the towers then read ids alone).
    """
    from cinesync.evaluation.context import item_genres

    if "genres" not in dataset.catalog or not dataset.catalog["genres"].notna().any():
        return torch.zeros(dataset.n_items, 0), []
    multi_hot, vocabulary = item_genres(dataset.catalog)
    return multi_hot, vocabulary


def recent_histories(dataset: Dataset, length: int) -> torch.Tensor:
    """Each user's ``length`` most recent distinct training items, oldest first: ``(n_users, length)`` int64.

    Shorter histories are padded at the end with :data:`NO_ITEM`.
    """
    history = torch.full((dataset.n_users, length), NO_ITEM, dtype=torch.long)
    if length == 0:
        return history
    for user, sequence in enumerate(dataset.sequences()):
        # Keep each item's last occurrence, in time order.
        reversed_unique, first = np.unique(sequence[::-1], return_index=True)
        recent = reversed_unique[np.argsort(-first)][-length:]
        history[user, : len(recent)] = torch.from_numpy(recent)
    return history


def pair_probabilities(pairs: dict[str, torch.Tensor], n_items: int) -> torch.Tensor:
    """Each item's share of the training pairs: the probability that a random training example is it."""
    counts = torch.bincount(pairs["items"], minlength=n_items).double()
    return (counts / counts.sum().clamp_min(1.0)).float()


# -- the module ---------------------------------------------------------------------------------------------
class TwoTowerNetwork(nn.Module):
    """Base of the tower modules: the feature and history buffers, the temperature, normalised outputs."""

    item_features: torch.Tensor
    user_history: torch.Tensor

    def __init__(
        self, item_features: torch.Tensor, user_history: torch.Tensor, config: TwoTowerConfig
    ) -> None:
        super().__init__()
        self.register_buffer("item_features", item_features.float().clone())
        self.register_buffer("user_history", user_history.long().clone())
        self.log_temperature = nn.Parameter(
            torch.tensor(math.log(config.temperature)), requires_grad=config.learn_temperature
        )

    def add_id_embeddings(self, dim: int) -> None:
        """The user and item id tables every tower model has (``users``, ``items``), drawn from N(0, 0.1²)."""
        self.users = init_embedding(nn.Embedding(self.n_users, dim), 0.1)
        self.items = init_embedding(nn.Embedding(self.n_items, dim), 0.1)

    @property
    def n_users(self) -> int:
        return len(self.user_history)

    @property
    def n_items(self) -> int:
        return len(self.item_features)

    @property
    def n_features(self) -> int:
        return int(self.item_features.shape[1])

    @property
    def temperature(self) -> torch.Tensor:
        """τ, a scalar tensor: ``exp(log τ)`` clamped to [:data:`MIN_TEMPERATURE`, :data:`MAX_TEMPERATURE`]."""
        return self.log_temperature.exp().clamp(MIN_TEMPERATURE, MAX_TEMPERATURE)

    def history(
        self, users: torch.Tensor, exclude: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The users' history items ``(B, L)`` (padding replaced by item 0) and a mask ``(B, L)`` of real ones.

        ``exclude`` ``(B,)``: an item to leave out of each user's history (the one the example predicts).
        """
        items = self.user_history[users]
        mask = items != NO_ITEM
        if exclude is not None:
            mask &= items != exclude.unsqueeze(1)
        return items.clamp_min(0), mask

    @abstractmethod
    def user_tower(self, users: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """The user tower's output ``(B, d)`` before normalisation; ``exclude`` as in :meth:`history`."""

    @abstractmethod
    def item_tower(self, items: torch.Tensor) -> torch.Tensor:
        """The item tower's output ``(M, d)`` before normalisation."""

    def user_embeddings(self, users: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """The users' unit-norm tower outputs ``(B, d)``."""
        return functional.normalize(self.user_tower(users, exclude), dim=-1)

    def item_embeddings(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """The items' unit-norm tower outputs ``(M, d)``; every item when ``items`` is None."""
        if items is None:
            items = torch.arange(self.n_items, device=self.item_features.device)
        return functional.normalize(self.item_tower(items), dim=-1)


def history_mean(table: torch.Tensor, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of ``table``'s rows ``items`` ``(B, L)`` where ``mask`` is True: ``(B, d)``, zeros if none.

    One ``embedding_bag``: no ``(B, L, d)`` intermediate, and its backward touches only the rows used.
    """
    weights = mask.to(table.dtype)
    total = functional.embedding_bag(items, table, mode="sum", per_sample_weights=weights)
    return total / weights.sum(1, keepdim=True).clamp_min(1.0)


class IdFeatureTowers(TwoTowerNetwork):
    """Yi et al.'s towers over ids and features.

    User tower: ``MLP([p_u ; mean of q_j over the user's history])``. Item tower: ``MLP([q_i ; W g_i])`` with
    ``g_i`` the item's multi-hot genres (``MLP(q_i)`` without features or with ``read_features=False``). ``q`` is
    one item-id table, read by both towers.
    """

    def __init__(
        self,
        item_features: torch.Tensor,
        user_history: torch.Tensor,
        config: TwoTowerConfig,
        *,
        read_features: bool = True,
    ) -> None:
        super().__init__(item_features, user_history, config)
        dim = config.dim
        self.add_id_embeddings(dim)
        reads = read_features and self.n_features > 0
        self.features = nn.Linear(self.n_features, dim, bias=False) if reads else None
        self.uses_history = config.history_length > 0
        user_inputs = dim * (2 if self.uses_history else 1)
        item_inputs = dim * (2 if self.features is not None else 1)
        self.user_mlp = mlp_tower(user_inputs, config)
        self.item_mlp = mlp_tower(item_inputs, config)

    def user_tower(self, users: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        parts = [self.users(users)]
        if self.uses_history:
            parts.append(history_mean(self.items.weight, *self.history(users, exclude)))
        return self.user_mlp(torch.cat(parts, dim=-1))

    def item_tower(self, items: torch.Tensor) -> torch.Tensor:
        parts = [self.items(items)]
        if self.features is not None:
            parts.append(self.features(self.item_features[items]))
        return self.item_mlp(torch.cat(parts, dim=-1))


class GatedFusion(nn.Module):
    """``g ⊙ a + (1 - g) ⊙ b`` with ``g = σ(W [a ; b] + c)`` per dimension: a gate choosing, dimension by
    dimension, between two views of the same thing (an id embedding and a content projection)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gate = nn.Linear(2 * dim, dim)

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.gate(torch.cat([first, second], dim=-1)))
        return gate * first + (1 - gate) * second


def mlp_tower(inputs: int, config: TwoTowerConfig) -> nn.Sequential:
    """A tower's MLP from ``inputs`` through ``config.layers`` (ReLU and dropout between layers)."""
    return mlp([inputs, *config.layers], config.dropout)


# -- the recommender ----------------------------------------------------------------------------------------
class TwoTowerRecommender(TorchRecommender):
    """A two-tower model trained with the in-batch softmax (log-q corrected, optionally mixed negatives).

    ``score(users)`` is ``user_embeddings(users) @ item_embeddings().T / temperature``. A subclass implements
    ``build_module`` from :meth:`fitted_inputs`; a multi-task subclass adds to :meth:`ranking_loss`.
    """

    config: TwoTowerConfig

    def __init__(self, config: ComponentConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.item_features: torch.Tensor | None = None
        self.user_history: torch.Tensor | None = None
        #: Each item's share of the training pairs (for log q); set by ``training_examples``.
        self.item_probabilities: torch.Tensor | None = None

    # -- inputs ---------------------------------------------------------------------------------------------
    def _fit(self, dataset: Dataset, *, validation: Dataset | None, trainer: TrainerConfig | None) -> None:
        self.item_features, vocabulary = item_feature_matrix(dataset)
        self.user_history = recent_histories(dataset, self.config.history_length)
        #: The columns of ``item_features`` (saved with the artifact), for building a new item's features.
        self.fit_info["item_feature_names"] = vocabulary
        super()._fit(dataset, validation=validation, trainer=trainer)

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.item_features = tensors["item_features"]
        self.user_history = tensors["user_history"]
        super().load_state_tensors(tensors)

    def fitted_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(item_features, user_history)``, which ``build_module`` needs (set by fit or by loading)."""
        if self.item_features is None or self.user_history is None:
            raise CineSyncError(f"{type(self).__name__}.build_module needs its fitted inputs: fit or load it")
        return self.item_features, self.user_history

    @property
    def network(self) -> TwoTowerNetwork:
        module = self.trained_module
        assert isinstance(module, TwoTowerNetwork)
        return module

    # -- training -------------------------------------------------------------------------------------------
    def training_examples(self, dataset: Dataset) -> dict[str, torch.Tensor]:
        """Every distinct (user, item) pair once; also records each item's share of them (for log q)."""
        pairs = interaction_pairs(dataset)
        self.item_probabilities = pair_probabilities(pairs, dataset.n_items)
        return pairs

    def collate(
        self, examples: dict[str, torch.Tensor], generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """The pairs, with ``uniform_negatives`` uniform random items per pair when mixing negatives."""
        batch = dict(examples)
        if self.config.uniform_negatives:
            assert self.item_probabilities is not None
            n_items = len(self.item_probabilities)
            batch["negatives"] = uniform_negatives(
                len(examples["users"]), n_items, self.config.uniform_negatives, generator
            )
        return batch

    def log_q(self, candidates: torch.Tensor, batch_size: int, n_uniform: int) -> torch.Tensor:
        """``log q`` of each candidate: the log of its expected count among a batch's candidates.

        A batch of ``batch_size`` training pairs holds item ``j`` about ``batch_size · p_j`` times, and
        ``n_uniform`` uniform draws add ``n_uniform / n_items``.
        """
        if self.item_probabilities is None:
            raise CineSyncError(
                f"{type(self).__name__}.loss needs the training pairs' item frequencies: fit it"
            )
        probabilities = self.item_probabilities.to(candidates.device)[candidates]
        return torch.log(batch_size * probabilities + n_uniform / len(self.item_probabilities) + 1e-12)

    def ranking_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The in-batch softmax loss of the batch, with the batch's user and positive-item embeddings."""
        network = self.network
        users = network.user_embeddings(batch["users"], exclude=batch["items"])
        positives = network.item_embeddings(batch["items"])
        candidates = batch["items"]
        extra = None
        if "negatives" in batch:
            negatives = batch["negatives"].flatten()
            extra = network.item_embeddings(negatives)
            candidates = torch.cat([candidates, negatives])
        log_q = None
        if self.config.log_q_weight > 0:
            n_uniform = len(candidates) - len(users)
            log_q = self.config.log_q_weight * self.log_q(candidates, len(users), n_uniform)
        loss = in_batch_softmax_loss(
            users,
            positives,
            network.temperature,
            log_q,
            extra_negatives=extra,
            candidate_ids=candidates,
        )
        return loss, users, positives

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | dict[str, torch.Tensor]:
        """The in-batch softmax loss (mean over the batch's users)."""
        return self.ranking_loss(batch)[0]

    # -- scoring --------------------------------------------------------------------------------------------
    @property
    def temperature(self) -> float:
        """The softmax temperature τ that divides the dot products."""
        return float(self.network.temperature.detach())

    def user_embeddings(self, users: torch.Tensor) -> torch.Tensor:
        """The unit-norm user-tower outputs of user indices ``users``: ``(len(users), d)`` on the CPU."""
        network = self.network
        with torch.no_grad():
            return network.user_embeddings(users.to(self.device)).float().cpu()

    def item_embeddings(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """The unit-norm item-tower outputs of item indices ``items`` (all when None): ``(M, d)`` on the CPU."""
        network = self.network
        with torch.no_grad():
            return network.item_embeddings(None if items is None else items.to(self.device)).float().cpu()

    def score(
        self, users: torch.Tensor, items: torch.Tensor | None = None, context: Any = None
    ) -> torch.Tensor:
        """``user_embeddings(users) @ item_embeddings(items).T / temperature``: one matrix product."""
        network = self.network
        with torch.no_grad():
            user_vectors = network.user_embeddings(users.to(self.device))
            item_vectors = network.item_embeddings(None if items is None else items.to(self.device))
            return (user_vectors @ item_vectors.t() / network.temperature).float().cpu()
