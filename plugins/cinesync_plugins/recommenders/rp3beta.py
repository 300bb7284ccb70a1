"""RP3β: item-item similarities from three-step random walks on the user-item graph, popularity-penalised.

Christoffel, Paudel, Newell & Bernstein, "Blockbusters and Wallflowers: Accurate, Diverse, and Scalable
Recommendations with Random Walks", RecSys 2015 (P³α); Paudel, Christoffel, Newell & Bernstein, "Updatable,
Accurate, Diverse, and Scalable Recommendations for Interactive Applications", ACM TiiS 2017 (RP³β). A walk
from item ``i`` steps to one of its users and then to one of that user's items:
``W_ij = Σ_u P(u | i)^α · P(j | u)^α`` with ``P(u | i) = 1/|U_i|`` and ``P(j | u) = 1/|I_u|`` on the binary
training graph, raised to ``α`` to sharpen (``α > 1``) or flatten (``α < 1``) the transitions. Column ``j`` is
then divided by ``|U_j|^β``, so that popular destinations, reached from everywhere, lose weight; each item
keeps its ``neighbours`` largest entries (the diagonal excluded). A user's score for ``j`` is the sum of
``W_ij`` over the items ``i`` in their history: the probability (up to the penalty) that a walk of three steps
from the user ends at ``j``. Needs user-item pairs only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from pydantic import Field

from cinesync.interfaces import ComponentConfig
from cinesync_plugins.recommenders._matrix import (
    ItemNeighbourhoodRecommender,
    sparse_product,
    sparse_rows,
    top_neighbours,
    transpose,
)

if TYPE_CHECKING:
    from cinesync.data.dataset import Dataset
    from cinesync.train.trainer import TrainerConfig


def walk_matrix(
    indptr: np.ndarray,
    indices: np.ndarray,
    n_rows: int,
    *,
    power: float,
    start: int = 0,
    stop: int | None = None,
) -> torch.Tensor:
    """Rows ``start:stop`` of the transition matrix ``P(column | row)^power`` of the binary CSR matrix, sparse.

    On a binary graph every transition out of a row is ``1 / its degree``, so the matrix is the binary rows
    scaled by ``degree^-power``.
    """
    stop = len(indptr) - 1 if stop is None else stop
    rows = sparse_rows(indptr, indices, n_rows, start=start, stop=stop)
    degrees = torch.from_numpy(np.diff(indptr[start : stop + 1])).float().clamp_min(1.0)
    scale = degrees.pow(-power)
    row_ids = rows.indices()[0]
    return torch.sparse_coo_tensor(
        rows.indices(), rows.values() * scale[row_ids], rows.shape, is_coalesced=True, check_invariants=False
    )


class RP3Beta(ItemNeighbourhoodRecommender):
    """Random walk P³ with exponent α and popularity penalty β, pruned to the top ``neighbours`` per item.

    The learned state is the pruned item-item matrix as two (n_items, neighbours) tensors: each item's kept
    destinations and their weights (zero where an item reaches fewer items than ``neighbours``).
    """

    class Config(ComponentConfig):
        alpha: float = Field(1.0, ge=0, description="Exponent α of the transition probabilities.")
        beta: float = Field(
            0.5, ge=0, description="Popularity penalty β: column j is divided by (users of j)^β."
        )
        neighbours: int = Field(100, ge=1, description="Largest entries kept per item (row).")
        block_size: int = Field(1024, ge=1, description="Items whose walks are computed at once.")

    config: Config

    def _fit(self, dataset: Dataset, *, validation: Dataset | None, trainer: TrainerConfig | None) -> None:
        assert self._seen_indptr is not None and self._seen_indices is not None
        config = self.config
        user_indptr, user_items = self._seen_indptr, self._seen_indices
        item_indptr, item_users = transpose(user_indptr, user_items, self.n_items)
        user_to_item = walk_matrix(user_indptr, user_items, self.n_items, power=config.alpha)
        penalty = torch.from_numpy(np.diff(item_indptr)).float().clamp_min(1.0).pow(-config.beta)

        def walks(start: int, stop: int) -> torch.Tensor:
            item_to_user = walk_matrix(
                item_indptr, item_users, self.n_users, power=config.alpha, start=start, stop=stop
            )
            return sparse_product(item_to_user, user_to_item) * penalty

        self.set_neighbours(*top_neighbours(self.n_items, config.neighbours, config.block_size, walks))
