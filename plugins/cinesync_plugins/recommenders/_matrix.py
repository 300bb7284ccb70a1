"""The binary interaction matrix in the forms the neighbourhood and linear models compute with.

Also the base of the neighbourhood models (ItemKNN, RP3β), whose state is a pruned item-item matrix.

A recommender keeps its training interactions as user-major CSR arrays (``indptr``, ``indices``: every stored
pair is one interaction, duplicates already merged). These helpers turn them into torch sparse tensors and
transpose them, without ever building a dense users x items matrix.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from cinesync.interfaces import ComponentConfig, Recommender


def sparse_rows(
    indptr: np.ndarray,
    indices: np.ndarray,
    n_columns: int,
    *,
    start: int = 0,
    stop: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Rows ``start:stop`` of the binary CSR matrix ``(indptr, indices)`` as a coalesced sparse COO tensor."""
    stop = len(indptr) - 1 if stop is None else stop
    lengths = np.diff(indptr[start : stop + 1])
    rows = np.repeat(np.arange(stop - start, dtype=np.int64), lengths)
    columns = indices[indptr[start] : indptr[stop]]
    return torch.sparse_coo_tensor(
        torch.from_numpy(np.stack([rows, columns])),
        torch.ones(len(columns), dtype=dtype),
        size=(stop - start, n_columns),
        is_coalesced=True,
        check_invariants=False,
    )


def transpose(indptr: np.ndarray, indices: np.ndarray, n_columns: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR arrays of the transposed matrix: item-major ``(indptr, user indices)`` from user-major arrays."""
    rows = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
    order = np.argsort(indices, kind="stable")
    transposed_indptr = np.zeros(n_columns + 1, np.int64)
    np.cumsum(np.bincount(indices, minlength=n_columns), out=transposed_indptr[1:])
    return transposed_indptr, rows[order]


def sparse_product(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """The dense result of multiplying two sparse matrices."""
    with warnings.catch_warnings():
        # torch runs sparse x sparse products through its CSR kernels and warns that they are in beta.
        warnings.filterwarnings(
            "ignore", message="Sparse CSR tensor support is in beta", category=UserWarning
        )
        return torch.sparse.mm(left, right).to_dense()


class SparseProduct(torch.autograd.Function):
    """``matrix @ dense`` for a sparse ``matrix`` whose ``transpose`` is at hand; the gradient is
    ``transpose @ grad``.

    torch's own backward of a sparse product transposes the sparse matrix at every step, which costs more than
    the product itself; a graph model that propagates over the same matrix many times builds the transpose once
    (a symmetric matrix is its own).
    """

    @staticmethod
    def forward(ctx: Any, matrix: torch.Tensor, transpose: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        ctx.transpose = transpose
        return matrix @ dense

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None, torch.Tensor]:
        return None, None, ctx.transpose @ grad


def top_neighbours(
    n_items: int, neighbours: int, block_size: int, block: Callable[[int, int], torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each item's ``neighbours`` largest entries of an item-item matrix computed ``block_size`` rows at a
    time by ``block(start, stop)`` (dense ``(stop - start, n_items)``), the diagonal excluded.

    Returns ``(items, weights)``, both ``(n_items, k)`` with ``k = min(neighbours, n_items - 1)``; memory stays
    ``block_size x n_items``.
    """
    k = max(1, min(neighbours, n_items - 1))
    weights, items = [], []
    for start in range(0, n_items, block_size):
        stop = min(start + block_size, n_items)
        rows = block(start, stop)
        rows[torch.arange(stop - start), torch.arange(start, stop)] = 0.0
        top_weights, top_items = rows.topk(k, dim=1)
        weights.append(top_weights)
        items.append(top_items)
    return torch.cat(items), torch.cat(weights)


class ItemNeighbourhoodRecommender(Recommender):
    """Base of models whose state is a pruned item-item matrix: each item's top destinations and weights.

    Subclasses compute ``neighbour_items`` and ``neighbour_weights`` (both ``(n_items, k)``, weight 0 where an
    item has fewer than ``k``) in ``_fit``, usually with :func:`top_neighbours`; a user's score for item ``j``
    is the sum of the weights from the items of their training history to ``j``.
    """

    def __init__(self, config: ComponentConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.neighbour_items: torch.Tensor | None = None
        self.neighbour_weights: torch.Tensor | None = None
        self._matrix: torch.Tensor | None = None

    def set_neighbours(self, items: torch.Tensor, weights: torch.Tensor) -> None:
        self.neighbour_items, self.neighbour_weights = items.long(), weights.float()
        self._matrix = None

    @property
    def item_matrix(self) -> torch.Tensor:
        """The pruned item-item matrix as a sparse (n_items, n_items) tensor, built once from the state."""
        self._check_fitted()
        assert self.neighbour_items is not None and self.neighbour_weights is not None
        if self._matrix is None:
            n_items, k = self.neighbour_items.shape
            rows = torch.arange(n_items).repeat_interleave(k)
            self._matrix = torch.sparse_coo_tensor(
                torch.stack([rows, self.neighbour_items.reshape(-1)]),
                self.neighbour_weights.reshape(-1),
                (n_items, n_items),
                check_invariants=False,
            ).coalesce()
        return self._matrix

    def score(
        self, users: torch.Tensor, items: torch.Tensor | None = None, context: Any = None
    ) -> torch.Tensor:
        history = self.seen_mask(users).float()
        # (history @ W) computed as (Wᵀ @ historyᵀ)ᵀ: torch multiplies sparse on the left.
        scores = torch.sparse.mm(self.item_matrix.t(), history.t()).t()
        return scores if items is None else scores[:, items]

    def state_tensors(self) -> dict[str, torch.Tensor]:
        self._check_fitted()
        assert self.neighbour_items is not None and self.neighbour_weights is not None
        return {"neighbour_items": self.neighbour_items, "neighbour_weights": self.neighbour_weights}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.set_neighbours(tensors["neighbour_items"], tensors["neighbour_weights"])
