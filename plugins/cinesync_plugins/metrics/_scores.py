"""What the metrics computed from full score rows share (see ``Metric.needs_scores``)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from cinesync.errors import CineSyncError
from cinesync.evaluation.ranking import RankedLists
from cinesync.interfaces import Metric


class ScoreRowMetric(Metric):
    """A per-user metric that reads every item's score: the evaluator calls ``compute_batch`` per batch."""

    needs_scores: ClassVar[bool] = True

    def compute(self, lists: RankedLists, context: dict[str, Any]) -> torch.Tensor:
        raise CineSyncError(
            f"metric {self.name} needs every item's score, which ranked lists do not hold: "
            "compute it with cinesync.evaluate, which passes score rows to compute_batch"
        )
