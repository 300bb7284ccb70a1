"""Implicit alternating least squares (iALS): matrix factorisation of implicit feedback with confidences.

Hu, Koren & Volinsky, "Collaborative Filtering for Implicit Feedback Datasets", ICDM 2008. Every (user, item)
cell is a preference ``p_ui`` (1 where the user interacted with the item, 0 elsewhere) held with confidence
``c_ui = 1 + α·r_ui`` (``r_ui`` binary here, so ``1 + α`` on interactions and 1 elsewhere). User factors ``x_u``
and item factors ``y_i`` minimise ``Σ c_ui (p_ui - x_u·y_i)² + λ(Σ|x_u|² + Σ|y_i|²)`` over all cells, by
alternating exact solves: with the item factors ``Y`` fixed, each user's factors solve the normal equations
``(YᵀY + Yᵀ(C_u - I)Y + λI) x_u = Yᵀ C_u p_u``. ``YᵀY`` is shared by every user and ``Yᵀ(C_u - I)Y`` only
involves the user's own items, so a sweep costs ``O(nnz·f² + (users + items)·f³)`` rather than anything
proportional to the full matrix (Hu et al., section 4). Items are solved the same way with the roles swapped.
Needs user-item pairs only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pydantic import Field

from cinesync.interfaces import ComponentConfig, Recommender
from cinesync_plugins.recommenders._matrix import transpose

if TYPE_CHECKING:
    from cinesync.data.dataset import Dataset
    from cinesync.train.trainer import TrainerConfig


def solve_factors(
    indptr: np.ndarray,
    indices: np.ndarray,
    fixed: torch.Tensor,
    *,
    l2: float,
    alpha: float,
    block_size: int,
) -> torch.Tensor:
    """One half-sweep of iALS: the exact factors of every row of the CSR matrix given the other side's factors.

    Row ``u`` (a user when ``fixed`` holds item factors, or the reverse) gets the solution of
    ``(FᵀF + α·F_uᵀF_u + λI) x = (1 + α)·Σ_{i∈u} f_i``, where ``F_u`` stacks the fixed factors of the row's
    columns. Rows are sorted by length and solved a block at a time with one batched ``torch.linalg.solve``:
    each block gathers its rows' factors into a ``(block, longest row, f)`` tensor padded with a zero row, so
    sorting keeps the padding small.
    """
    n_rows, dim = len(indptr) - 1, fixed.shape[1]
    gram = fixed.t() @ fixed
    gram.diagonal().add_(l2)
    # Index len(fixed) is a zero row: padding positions add nothing to either side of the equations.
    padded = torch.cat([fixed, fixed.new_zeros(1, dim)])
    lengths = np.diff(indptr)
    order = np.argsort(lengths, kind="stable")
    solution = fixed.new_zeros(n_rows, dim)
    for start in range(0, n_rows, block_size):
        rows = order[start : start + block_size]
        row_lengths = lengths[rows]
        width = max(int(row_lengths.max()), 1)
        columns = np.full((len(rows), width), len(fixed), dtype=np.int64)
        positions = np.arange(width) < row_lengths[:, None]
        offsets = np.arange(row_lengths.sum()) - np.repeat(np.cumsum(row_lengths) - row_lengths, row_lengths)
        columns[positions] = indices[np.repeat(indptr[rows], row_lengths) + offsets]
        gathered = padded[torch.from_numpy(columns)]
        lhs = gram + alpha * gathered.transpose(1, 2) @ gathered
        rhs = (1.0 + alpha) * gathered.sum(1)
        solution[torch.from_numpy(rows)] = torch.linalg.solve(lhs, rhs)
    return solution


class IALS(Recommender):
    """Implicit ALS (Hu, Koren & Volinsky, 2008): confidence-weighted factorisation solved in closed form.

    The learned state is the user and item factor matrices; a user's scores are their factors times every
    item's.
    """

    class Config(ComponentConfig):
        factors: int = Field(64, ge=1, description="Number of latent factors f.")
        l2: float = Field(
            10.0, gt=0, description="L2 penalty λ on the factors (manifests pin the value tuned per dataset)."
        )
        alpha: float = Field(
            5.0, ge=0, description="Confidence slope: an interaction's cell is weighted 1 + alpha, others 1."
        )
        iterations: int = Field(15, ge=1, description="Alternating sweeps (users, then items).")
        init_std: float = Field(0.01, gt=0, description="Standard deviation of the initial item factors.")
        block_size: int = Field(
            32,
            ge=1,
            description="Rows solved at once; small blocks pad less (rows are sorted by length): 32 was "
            "fastest of 16 to 256 on MovieLens.",
        )
        seed: int = Field(0, description="Seed of the initial item factors.")

    config: Config

    def __init__(self, config: ComponentConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.user_factors: torch.Tensor | None = None
        self.item_factors: torch.Tensor | None = None

    def _fit(self, dataset: Dataset, *, validation: Dataset | None, trainer: TrainerConfig | None) -> None:
        assert self._seen_indptr is not None and self._seen_indices is not None
        config = self.config
        user_indptr, user_items = self._seen_indptr, self._seen_indices
        item_indptr, item_users = transpose(user_indptr, user_items, self.n_items)
        generator = torch.Generator().manual_seed(config.seed)
        # Float64 keeps the normal equations well conditioned when λ is small relative to α·|items of u|.
        items = torch.randn(self.n_items, config.factors, generator=generator, dtype=torch.float64)
        items *= config.init_std
        solve = {"l2": config.l2, "alpha": config.alpha, "block_size": config.block_size}
        for _ in range(config.iterations):
            users = solve_factors(user_indptr, user_items, items, **solve)
            items = solve_factors(item_indptr, item_users, users, **solve)
        self.user_factors, self.item_factors = users.float(), items.float()

    def score(
        self, users: torch.Tensor, items: torch.Tensor | None = None, context: Any = None
    ) -> torch.Tensor:
        self._check_fitted()
        assert self.user_factors is not None and self.item_factors is not None
        item_factors = self.item_factors if items is None else self.item_factors[items]
        return self.user_factors[users.long()] @ item_factors.t()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        self._check_fitted()
        assert self.user_factors is not None and self.item_factors is not None
        return {"user_factors": self.user_factors, "item_factors": self.item_factors}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.user_factors = tensors["user_factors"].float()
        self.item_factors = tensors["item_factors"].float()
