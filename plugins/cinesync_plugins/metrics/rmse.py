"""Root mean squared error of predicted ratings."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from cinesync.evaluation.ranking import ScoredBatch
from cinesync.interfaces import ComponentConfig
from cinesync_plugins.metrics._ranking import per_row_mean
from cinesync_plugins.metrics._scores import ScoreRowMetric


class RMSE(ScoreRowMetric):
    """RMSE: the root of the mean squared error of a rating predictor on each user's rated test interactions.

    ``RMSE(u) = sqrt( (1/|T_u|) Σ_{(i, r)∈T_u} (r̂_ui − r)² )``, with ``T_u`` the user's test interactions that
    carry a rating and ``r̂_ui`` the model's score. The reported value is the root of the users' mean squared
    error, ``sqrt( mean_u RMSE(u)² )``: every user weighs the same (the pooled RMSE of the Netflix Prize
    weighs heavy raters more), and with one test rating per user (leave-one-out) it is the pooled RMSE.
    Only for models whose class sets ``predicts_ratings = True``; asking it of another model raises
    :class:`~cinesync.errors.CineSyncError`. Source: Herlocker, Konstan, Terveen & Riedl, "Evaluating
    collaborative filtering recommender systems", ACM TOIS 22(1), 2004, §3.2.1.
    """

    metric_id: ClassVar[str] = "rmse"
    higher_is_better: ClassVar[bool] = False
    needs: ClassVar[frozenset[str]] = frozenset({"ratings"})

    class Config(ComponentConfig):
        """RMSE has no parameters."""

    def compute_batch(self, batch: ScoredBatch, context: dict[str, Any]) -> torch.Tensor:
        assert batch.ratings is not None
        pairs = batch.ratings
        errors = batch.scores[pairs.rows, pairs.items] - pairs.ratings
        return per_row_mean(pairs.rows, errors.square(), len(batch.users)).sqrt()

    def summarise(self, values: np.ndarray) -> float:
        # The root of the mean MSE, not the mean of the roots, which would equal MAE under leave-one-out.
        return float(np.sqrt(np.square(values).mean()))
