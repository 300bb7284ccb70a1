"""EASE: a shallow linear autoencoder with a closed-form solution.

Harald Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019. The item-item weight matrix
``B`` minimises ``||X - XB||² + λ||B||²`` subject to ``diag(B) = 0``, where ``X`` is the binary user x item
training matrix; its solution is ``B = I - P·diag(1/diag(P))`` with ``P = (XᵀX + λI)⁻¹``. A user's scores are
their training row times ``B``. Needs user-item pairs only. Memory is quadratic in the number of items.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from pydantic import Field

from cinesync.interfaces import ComponentConfig, Recommender
from cinesync_plugins.recommenders._matrix import sparse_product, sparse_rows

if TYPE_CHECKING:
    from cinesync.data.dataset import Dataset
    from cinesync.train.trainer import TrainerConfig


def ease_weights(matrix: torch.Tensor, l2: float) -> torch.Tensor:
    """Steck's closed-form EASE weights (float32 items x items, zero diagonal) of a sparse binary ``matrix``.

    ``P = (XᵀX + λI)⁻¹`` is computed through whichever Gram matrix is smaller: directly when there are fewer
    items than users, otherwise by the Woodbury identity ``P = (I - Xᵀ(XXᵀ + λI)⁻¹X) / λ``, which inverts a
    users x users matrix instead. Inverses use a float64 Cholesky factorisation; the items x items matrices
    are float32, as the scores use them.
    """
    n_users, n_items = matrix.shape
    matrix = matrix.double()
    transposed = matrix.t().coalesce()
    if n_items <= n_users:
        precision = _spd_inverse(sparse_product(transposed, matrix), l2).float()
    else:
        user_inverse = _spd_inverse(sparse_product(matrix, transposed), l2)
        # Xᵀ K X as two sparse x dense products (K X = (Xᵀ K)ᵀ as K is symmetric); P is kept times λ, a
        # factor that cancels in B.
        left = torch.sparse.mm(transposed, user_inverse).float()
        precision = torch.sparse.mm(transposed.float(), left.t().contiguous()).neg_()
        precision.diagonal().add_(1.0)
    weights = precision.div_(-precision.diagonal().clone())
    weights.fill_diagonal_(0.0)
    return weights


def _spd_inverse(gram: torch.Tensor, l2: float) -> torch.Tensor:
    gram.diagonal().add_(l2)
    return torch.cholesky_inverse(torch.linalg.cholesky(gram))


class EASE(Recommender):
    """Embarrassingly Shallow Autoencoder (Steck, 2019): scores = training row x item-item weights."""

    class Config(ComponentConfig):
        l2: float = Field(
            100.0,
            gt=0,
            description="L2 penalty λ on the weights (manifests pin the value tuned on validation per dataset).",
        )

    config: Config

    def __init__(self, config: ComponentConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.weights: torch.Tensor | None = None

    def _fit(self, dataset: Dataset, *, validation: Dataset | None, trainer: TrainerConfig | None) -> None:
        assert self._seen_indptr is not None and self._seen_indices is not None
        matrix = sparse_rows(self._seen_indptr, self._seen_indices, self.n_items)
        self.weights = ease_weights(matrix, self.config.l2)

    def score(
        self, users: torch.Tensor, items: torch.Tensor | None = None, context: Any = None
    ) -> torch.Tensor:
        self._check_fitted()
        assert self.weights is not None
        weights = self.weights if items is None else self.weights[:, items]
        return self.seen_mask(users).to(weights.dtype) @ weights

    def state_tensors(self) -> dict[str, torch.Tensor]:
        self._check_fitted()
        assert self.weights is not None
        return {"weights": self.weights}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.weights = tensors["weights"].float()
