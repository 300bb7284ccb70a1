"""What the neural collaborative-filtering models (``ncf``, ``simple_ncf``, ``deep_ncf``,
``cross_attention_ncf``) share beyond :mod:`cinesync_plugins.layers`.

* :class:`PairScoringRecommender`: the training protocol of a model that scores (user, item) pairs with a
  network: every distinct training pair once, ``negatives`` uniform random items per pair, and a ranking loss
  (BPR, sampled softmax, or the pointwise log loss of He et al. 2017); scoring a batch of users against the
  catalogue evaluates the network on the users x items grid in chunks that bound memory.
* :class:`PairLinear`: the first layer of an MLP over ``[user ; item]``, computed without materialising the
  concatenation for every pair of the grid.
* :class:`GenreAwareRecommender`: item genres read from the catalogue at fit time and kept as a model tensor,
  so that scoring a saved model needs no dataset.

A subclass implements ``pair_scores(users, items)``: users ``(B,)`` against items ``(B, M)`` (each user its own
candidates, as in training) or ``(1, M)`` (the same candidates for every user, as in scoring), shape ``(B, M)``.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import Field
from torch import nn

from cinesync.interfaces import ComponentConfig
from cinesync.train.torch_model import TorchRecommender
from cinesync_plugins.layers import RankingLoss, UniformNegativeSampling, mlp, ranking_loss

if TYPE_CHECKING:
    from cinesync.data.dataset import Dataset
    from cinesync.train.trainer import TrainerConfig


#: Padding in a row of genre ids; an item without genres gets :data:`NO_GENRE` so every row has one token.
PADDING_GENRE = 0
NO_GENRE = 1


class PairScoringConfig(ComponentConfig):
    """The training options every pair-scoring model has."""

    loss: RankingLoss = Field(
        "bpr",
        description="'bpr': pairwise -log σ(s⁺ - s⁻); 'softmax': cross-entropy of the positive against its "
        "negatives; 'bce': pointwise log loss, positives 1 and negatives 0 (He et al. 2017).",
    )
    negatives: int = Field(4, ge=1, description="Uniform random negative items per observed pair.")


class PairScoringRecommender(UniformNegativeSampling, TorchRecommender):
    """A recommender whose network scores (user, item) pairs, trained on uniform negatives with a ranking loss."""

    config: PairScoringConfig
    #: The most (user, item) pairs one scoring chunk evaluates: bounds the activations to about
    #: ``max_pairs x widest layer`` floats.
    max_pairs: ClassVar[int] = 1 << 18

    @abstractmethod
    def pair_scores(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of users ``(B,)`` for items ``(B, M)`` or ``(1, M)``: shape ``(B, M)``."""

    def batch_scores(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores of the batch's positives ``(B,)`` and negatives ``(B, n)``, from one network pass."""
        candidates = torch.cat([batch["positives"].unsqueeze(1), batch["negatives"]], dim=1)
        scores = self.pair_scores(batch["users"], candidates)
        return scores[:, 0], scores[:, 1:]

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | dict[str, torch.Tensor]:
        """The configured ranking loss, mean over the batch."""
        return ranking_loss(self.config.loss, *self.batch_scores(batch))

    def score(
        self, users: torch.Tensor, items: torch.Tensor | None = None, context: Any = None
    ) -> torch.Tensor:
        """The network on the ``users x items`` grid, a chunk of users at a time."""
        device = self.device
        candidates = (torch.arange(self.n_items) if items is None else items).to(device).unsqueeze(0)
        users = users.to(device)
        rows_per_chunk = max(1, self.max_pairs // max(1, candidates.shape[1]))
        chunks = [
            self.pair_scores(users[start : start + rows_per_chunk], candidates)
            for start in range(0, len(users), rows_per_chunk)
        ]
        if not chunks:
            return torch.zeros(0, candidates.shape[1])
        return torch.cat(chunks).float().cpu()


class PairLinear(nn.Module):
    """``W [u ; i] + b`` for user vectors ``(B, 1, d_u)`` and item vectors ``(B or 1, M, d_i)``.

    Equal to a linear layer over the concatenation, written as ``W_u u + W_i i + b`` so that scoring the grid
    projects each user and each item once and only adds per pair.
    """

    def __init__(self, user_dim: int, item_dim: int, out_dim: int) -> None:
        super().__init__()
        self.user = nn.Linear(user_dim, out_dim)
        self.item = nn.Linear(item_dim, out_dim, bias=False)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.user(users) + self.item(items)


class PairTower(nn.Module):
    """An MLP over ``[user ; item]`` with hidden sizes ``layers``, ending in an activation (NCF's MLP tower)."""

    def __init__(self, user_dim: int, item_dim: int, layers: list[int], dropout: float) -> None:
        super().__init__()
        self.input = PairLinear(user_dim, item_dim, layers[0])
        self.activation = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.hidden = mlp(layers, dropout, final_activation=True) if len(layers) > 1 else nn.Identity()

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.hidden(self.dropout(self.activation(self.input(users, items))))


def padded_genre_ids(dataset: Dataset) -> torch.Tensor:
    """Each item's genres as a row of ids ``(n_items, most genres of an item)``.

    Genre ``g`` of the sorted vocabulary is id ``g + 2``; :data:`PADDING_GENRE` fills short rows and an item
    without genres has the single id :data:`NO_GENRE`, so attention over a row always has a token to attend to.
    """
    from cinesync.evaluation.context import item_genres

    multi_hot, _ = item_genres(dataset.catalog)
    counts = multi_hot.sum(1).long()
    width = max(1, int(counts.max()))
    ids = torch.full((dataset.n_items, width), PADDING_GENRE, dtype=torch.long)
    rows, genres = multi_hot.nonzero(as_tuple=True)
    # Position of each (item, genre) within its item's row: nonzero() lists each row's genres in order.
    positions = torch.arange(len(rows)) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    ids[rows, positions] = genres + 2
    ids[counts == 0, 0] = NO_GENRE
    return ids


def genre_vocabulary_size(item_genre_ids: torch.Tensor) -> int:
    """Rows an embedding of the ids in ``item_genre_ids`` needs (padding and no-genre included)."""
    return max(NO_GENRE, int(item_genre_ids.max())) + 1


class GenreAwareRecommender(PairScoringRecommender):
    """A pair-scoring model that reads item genres from the catalogue when it is fitted.

    The genre ids become the module buffer ``item_genre_ids``, saved with the weights; ``build_module`` reads
    them from :attr:`item_genre_ids`, which loading restores before rebuilding the module.
    """

    requires: ClassVar[frozenset[str]] = frozenset({"item_genres"})

    def __init__(self, config: ComponentConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.item_genre_ids: torch.Tensor | None = None

    def _fit(self, dataset: Dataset, *, validation: Dataset | None, trainer: TrainerConfig | None) -> None:
        self.item_genre_ids = padded_genre_ids(dataset)
        super()._fit(dataset, validation=validation, trainer=trainer)

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.item_genre_ids = tensors["item_genre_ids"]
        super().load_state_tensors(tensors)

    def fitted_genre_ids(self) -> torch.Tensor:
        """:attr:`item_genre_ids`, which ``build_module`` needs (set by fit or by loading)."""
        if self.item_genre_ids is None:
            raise RuntimeError(f"{type(self).__name__}.build_module needs item genres: fit or load the model")
        return self.item_genre_ids
