"""Area under the ROC curve over each user's full ranking."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from cinesync.evaluation.ranking import ScoredBatch
from cinesync.interfaces import ComponentConfig
from cinesync_plugins.metrics._scores import ScoreRowMetric


class AUC(ScoreRowMetric):
    """AUC: the share of (relevant, non-relevant) candidate pairs the model orders correctly, ties counting ½.

    ``AUC(u) = (1 / (|R_u|·|N_u|)) Σ_{i∈R_u} Σ_{j∈N_u} (1[s_ui > s_uj] + ½·1[s_ui = s_uj])`` with ``R_u`` the
    held-out items and ``N_u`` the other candidates (excluded history items are not candidates). Computed by
    ranks (Mann-Whitney): with ``rank(i)`` the 1-based ascending rank of item i among the candidates, tied
    scores sharing their average rank, ``AUC(u) = (Σ_{i∈R_u} rank(i) − |R_u|(|R_u|+1)/2) / (|R_u|·|N_u|)``.
    A user with no non-relevant candidate has no pairs and is not judged (NaN). Source: Rendle, Freudenthaler,
    Gantner & Schmidt-Thieme, "BPR: Bayesian personalized ranking from implicit feedback", UAI 2009, §6.2.
    """

    metric_id: ClassVar[str] = "auc"

    class Config(ComponentConfig):
        """AUC has no parameters: it judges the whole ranking."""

    def compute_batch(self, batch: ScoredBatch, context: dict[str, Any]) -> torch.Tensor:
        scores, relevant = batch.scores, batch.relevant
        n_relevant = relevant.sum(1)
        n_excluded = torch.isinf(scores).sum(1, keepdim=True)
        n_negative = scores.shape[1] - n_excluded.squeeze(1) - n_relevant
        # Only the relevant items' ranks are needed: gather their scores into (B, max |R_u|), padded.
        width = max(int(n_relevant.max()), 1)
        slots = torch.topk(relevant.to(torch.uint8), width, dim=1, sorted=False)
        present = slots.values.bool()
        values = scores.gather(1, slots.indices)
        if scores.device.type == "cpu":
            # NumPy's vectorised sort is about ten times faster than torch.sort on CPU rows of this size.
            ordered = torch.from_numpy(np.sort(scores.numpy(), axis=1))
        else:
            ordered = torch.sort(scores, dim=1).values
        # Excluded items score -inf, below every candidate: subtracting their count ranks among candidates.
        below = torch.searchsorted(ordered, values, right=False) - n_excluded
        at_or_below = torch.searchsorted(ordered, values, right=True) - n_excluded
        average_rank = (below + at_or_below + 1).double() / 2
        rank_sum = torch.where(present, average_rank, 0.0).sum(1)
        n_relevant = n_relevant.double()
        pairs = n_relevant * n_negative.double()
        return ((rank_sum - n_relevant * (n_relevant + 1) / 2) / pairs).float()
