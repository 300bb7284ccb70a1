"""The binary interaction matrix in the forms the neighbourhood and linear models compute with.

A recommender keeps its training interactions as user-major CSR arrays (``indptr``, ``indices``: every stored
pair is one interaction, duplicates already merged). These helpers turn them into torch sparse tensors and
transpose them, without ever building a dense users x items matrix.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch


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
