"""Most-popular baseline: every user gets the items with the most training interactions.

The yardstick any personalised model must beat (see e.g. Cremonesi, Koren & Turrin, "Performance of
recommender algorithms on top-N recommendation tasks", RecSys 2010). Needs user-item pairs only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from cinesync.interfaces import ComponentConfig, Recommender

if TYPE_CHECKING:
    from cinesync.data.dataset import Dataset
    from cinesync.train.trainer import TrainerConfig


class Popularity(Recommender):
    """Scores each item by its number of training interactions, the same for every user."""

    class Config(ComponentConfig):
        """Popularity has no hyper-parameters."""

    def __init__(self, config: ComponentConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.counts: torch.Tensor | None = None

    def _fit(self, dataset: Dataset, *, validation: Dataset | None, trainer: TrainerConfig | None) -> None:
        self.counts = torch.from_numpy(dataset.item_counts()).float()

    def score(
        self, users: torch.Tensor, items: torch.Tensor | None = None, context: Any = None
    ) -> torch.Tensor:
        self._check_fitted()
        assert self.counts is not None
        counts = self.counts if items is None else self.counts[items]
        return counts.expand(len(users), -1).clone()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        self._check_fitted()
        assert self.counts is not None
        return {"counts": self.counts}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.counts = tensors["counts"].float()
