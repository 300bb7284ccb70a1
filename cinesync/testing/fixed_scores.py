"""A recommender whose scores you set: for testing metrics and evaluation code against known rankings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cinesync.interfaces import ComponentConfig, Recommender

if TYPE_CHECKING:
    import torch

    from cinesync.data.dataset import Dataset


class FixedScores(Recommender):
    """Scores user ``u`` with row ``u`` of ``matrix`` (users x items), which must be set before ``fit``.

    ``fit`` learns nothing: it records the dataset's id maps and training items like any recommender, so the
    evaluator's exclusion of seen items and every metric can be checked against a hand-written ranking.
    """

    class Config(ComponentConfig):
        """No parameters: the scores are the state."""

    matrix: torch.Tensor

    def _fit(self, dataset: Dataset, *, validation: Dataset | None, trainer: Any) -> None:
        """Nothing to learn: the scores are given."""

    def score(
        self, users: torch.Tensor, items: torch.Tensor | None = None, context: Any = None
    ) -> torch.Tensor:
        rows = self.matrix[users]
        return rows if items is None else rows[:, items]

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"matrix": self.matrix}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.matrix = tensors["matrix"]
