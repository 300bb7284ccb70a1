"""What the business metrics share: the logged outcomes of the items each user was recommended.

The evaluation context entry ``outcomes`` is a validated outcome log (:mod:`cinesync.data.outcomes`). A log
row *matches* when its (user, item) pair is in that user's top k. A user none of whose recommended items
appears in the log cannot be judged: business metrics return NaN for them, and the evaluator averages over
the others (NaN rule of :class:`cinesync.interfaces.Metric`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from cinesync.evaluation.ranking import RankedLists
from cinesync_plugins.metrics._ranking import recommended


@dataclass
class LoggedOutcomes:
    """The log's rows for the evaluated users, each with its user's position in the ranked lists.

    ``matches`` flags the rows whose item is in that user's top k; the other columns are the log's.
    """

    positions: torch.Tensor
    matches: torch.Tensor
    timestamp: torch.Tensor
    clicked: torch.Tensor
    watch_seconds: torch.Tensor
    completed: torch.Tensor


def logged_outcomes(lists: RankedLists, k: int, outcomes: pd.DataFrame) -> LoggedOutcomes:
    """The rows of ``outcomes`` that belong to evaluated users, matched against their top ``k``."""
    list_users = lists.users.numpy()
    log_users = outcomes["user"].to_numpy(np.int64)
    position_of = np.full(max(int(list_users.max(initial=-1)), int(log_users.max(initial=-1))) + 1, -1)
    position_of[list_users] = np.arange(len(list_users))
    positions = position_of[log_users]
    evaluated = positions >= 0
    positions = positions[evaluated]
    log_items = outcomes["item"].to_numpy(np.int64)[evaluated]
    items = lists.items_at(k).numpy()
    rows = np.broadcast_to(np.arange(len(items))[:, None], items.shape)
    present = recommended(lists.items_at(k)).numpy()
    # One integer per (list position, item) pair, so matching is a set-membership test.
    recommended_keys = rows[present] * lists.n_items + items[present]
    matches = np.isin(positions * lists.n_items + log_items, recommended_keys)
    frame = outcomes[evaluated]
    return LoggedOutcomes(
        positions=torch.from_numpy(positions.astype(np.int64)),
        matches=torch.from_numpy(matches),
        timestamp=torch.from_numpy(frame["timestamp"].to_numpy(np.int64, copy=True)),
        clicked=torch.from_numpy(frame["clicked"].to_numpy(bool, copy=True)),
        watch_seconds=torch.from_numpy(frame["watch_seconds"].to_numpy(np.float64, copy=True)),
        completed=torch.from_numpy(frame["completed"].to_numpy(bool, copy=True)),
    )
