"""Intra-list diversity: how different the items of each top-k list are from one another."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from cinesync.errors import CineSyncError
from cinesync.evaluation.ranking import RankedLists
from cinesync.interfaces import Metric
from cinesync_plugins.metrics._ranking import CutoffConfig, item_values, recommended

#: The context entry each feature source reads.
_CONTEXT_ENTRY = {"genres": "item_genres", "item_features": "item_features", "embeddings": "item_embeddings"}


class ILD(Metric):
    """ILD@k: the mean pairwise cosine distance between the items of each user's top k.

    ``ILD@k(u) = (1 / (n(n − 1))) Σ_{i≠j ∈ L_u} (1 − cos(f_i, f_j))`` over the ``n`` items of the list
    ``L_u``, with ``f_i`` the item's features from ``features``: ``"genres"`` (multi-hot catalogue genres),
    ``"item_features"`` (the catalogue's numeric columns) or ``"embeddings"`` (the caller's
    ``item_embeddings`` context entry). An item without features (a zero vector) is at distance 1 from every
    other. Computed without the (k x k) matrices: with unit vectors ``x_i``, ``Σ_{i≠j} cos = ||Σ_i x_i||² −
    Σ_i ||x_i||²``. A list of fewer than two items has no pairs and is not judged (NaN). Source: Ziegler,
    McNee, Konstan & Lausen, "Improving recommendation lists through topic diversification", WWW 2005
    (Elliot ``IntraListDiversity`` / RecBole-style cosine ILD).
    """

    metric_id: ClassVar[str] = "ild"

    class Config(CutoffConfig):
        """ILD at ``k`` over the item features named by ``features``."""

        features: Literal["genres", "embeddings", "item_features"] = Field(
            "genres",
            description="where item vectors come from: catalogue genres, caller embeddings, numeric columns",
        )

    @property
    def needs(self) -> frozenset[str]:  # type: ignore[override]
        # The context entry depends on the configured feature source.
        return frozenset({_CONTEXT_ENTRY[self.config.features]})

    def compute(self, lists: RankedLists, context: dict[str, Any]) -> torch.Tensor:
        features = torch.as_tensor(context[_CONTEXT_ENTRY[self.config.features]]).float()
        if features.ndim != 2 or features.shape[0] != lists.n_items:
            raise CineSyncError(
                f"metric {self.name}: {_CONTEXT_ENTRY[self.config.features]} must be an (n_items, d) matrix "
                f"with n_items = {lists.n_items}, got shape {tuple(features.shape)}"
            )
        unit = features / features.norm(dim=1, keepdim=True).clamp(min=1e-12)
        items = lists.items_at(self.config.k)
        present = recommended(items)
        vectors = item_values(unit, items) * present.unsqueeze(2)
        total = vectors.sum(1).square().sum(1) - vectors.square().sum((1, 2))
        n = present.sum(1).double()
        similarity = total.double() / (n * (n - 1))
        return torch.where(n >= 2, 1.0 - similarity, torch.nan).float()
