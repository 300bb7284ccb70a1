"""Mean absolute error of predicted ratings."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from cinesync.evaluation.ranking import ScoredBatch
from cinesync.interfaces import ComponentConfig
from cinesync_plugins.metrics._ranking import per_row_mean
from cinesync_plugins.metrics._scores import ScoreRowMetric


class MAE(ScoreRowMetric):
    """MAE: the mean absolute error of a rating predictor on each user's rated test interactions.

    ``MAE(u) = (1/|T_u|) Σ_{(i, r)∈T_u} |r̂_ui − r|``, with ``T_u`` the user's test interactions that carry a
    rating and ``r̂_ui`` the model's score, averaged over users. Only for models whose class sets
    ``predicts_ratings = True``; asking it of another model raises :class:`~cinesync.errors.CineSyncError`.
    Source: Herlocker, Konstan, Terveen & Riedl, "Evaluating collaborative filtering recommender systems",
    ACM TOIS 22(1), 2004, §3.2.1.
    """

    metric_id: ClassVar[str] = "mae"
    higher_is_better: ClassVar[bool] = False
    needs: ClassVar[frozenset[str]] = frozenset({"ratings"})

    class Config(ComponentConfig):
        """MAE has no parameters."""

    def compute_batch(self, batch: ScoredBatch, context: dict[str, Any]) -> torch.Tensor:
        assert batch.ratings is not None
        pairs = batch.ratings
        errors = batch.scores[pairs.rows, pairs.items] - pairs.ratings
        return per_row_mean(pairs.rows, errors.abs(), len(batch.users))
