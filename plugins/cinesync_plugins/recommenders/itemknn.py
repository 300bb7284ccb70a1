"""Item-based k-nearest-neighbours collaborative filtering.

Sarwar, Karypis, Konstan & Riedl, "Item-based collaborative filtering recommendation algorithms", WWW 2001;
Deshpande & Karypis, "Item-based top-N recommendation algorithms", TOIS 2004. The similarity of two items is
the cosine of their binary user vectors, ``|U_i ∩ U_j| / (sqrt(|U_i|·|U_j|) + shrinkage)``: the shrinkage term
(Koren 2008) damps similarities supported by few users. Each item keeps its ``neighbours`` most similar items,
and a user's score for item ``i`` sums, over the items ``j`` in the user's history, the similarity of ``j``
to ``i`` where ``i`` is among ``j``'s kept neighbours. Needs user-item pairs only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from pydantic import Field

from cinesync.interfaces import ComponentConfig
from cinesync_plugins.recommenders._matrix import (
    ItemNeighbourhoodRecommender,
    sparse_rows,
    top_neighbours,
    transpose,
)

if TYPE_CHECKING:
    from cinesync.data.dataset import Dataset
    from cinesync.train.trainer import TrainerConfig


class ItemKNN(ItemNeighbourhoodRecommender):
    """Item-item cosine similarity pruned to the top ``neighbours`` per item; score = history x similarity.

    The learned state is two (n_items, neighbours) tensors: each item's most similar items and their
    similarities (zero where an item has fewer similar items than ``neighbours``).
    """

    class Config(ComponentConfig):
        # Chosen on ml-latest-small's leave-last-out validation: 5 to 10 neighbours with shrinkage 5 to 10
        # score best there, falling steadily beyond 20 neighbours.
        neighbours: int = Field(10, ge=1, description="Most similar items kept per item.")
        shrinkage: float = Field(5.0, ge=0, description="Added to the cosine's denominator.")
        block_size: int = Field(1024, ge=1, description="Items whose similarities are computed at once.")

    config: Config

    def _fit(self, dataset: Dataset, *, validation: Dataset | None, trainer: TrainerConfig | None) -> None:
        assert self._seen_indptr is not None and self._seen_indices is not None
        item_indptr, item_users = transpose(self._seen_indptr, self._seen_indices, self.n_items)
        item_user = sparse_rows(item_indptr, item_users, self.n_users)
        norms = torch.from_numpy(np.sqrt(np.diff(item_indptr))).float()

        def similarities(start: int, stop: int) -> torch.Tensor:
            block = sparse_rows(item_indptr, item_users, self.n_users, start=start, stop=stop).to_dense()
            overlap = torch.sparse.mm(item_user, block.t()).t()
            denominator = norms[start:stop, None] * norms[None, :] + self.config.shrinkage
            return overlap / denominator.clamp_min(1e-12)

        self.set_neighbours(
            *top_neighbours(self.n_items, self.config.neighbours, self.config.block_size, similarities)
        )
