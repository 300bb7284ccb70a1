"""Full-ranking evaluation: every evaluated user's scores over the whole catalogue, judged by metric plugins.

Protocol. The evaluated users are those with at least one interaction in ``test``; their relevant items are
their test items (duplicates counted once). Each user's excluded items are their ``history`` interactions when
a history is given, else the model's own training items (:meth:`Recommender.seen_mask`). An excluded item that
is also relevant stays in the ranking and counts as a hit: a re-watch held out for testing is a correct
recommendation, and masking it would make the user unwinnable on that item. Every other item of the catalogue
is ranked.

Metric values. A per-user metric reports the mean of its per-user values over the users it judged (or what
its ``summarise`` makes of them): a NaN value marks a user the metric cannot judge (see
:class:`~cinesync.interfaces.Metric`) and is left out, and a metric that judged nobody reports NaN. Metrics
that set ``needs_scores`` get every batch's full score rows (:class:`~cinesync.evaluation.ranking.ScoredBatch`)
while the batch is ranked.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cinesync.data.dataset import Dataset
from cinesync.errors import CineSyncError, DataError
from cinesync.evaluation.context import build_context
from cinesync.evaluation.metrics import parse_metric
from cinesync.evaluation.ranking import RankedLists, ScoredBatch
from cinesync.interfaces import Metric, Recommender


@dataclass
class EvaluationResult:
    """Metric values and the per-user values behind them.

    ``metrics`` maps each metric's name (``ndcg@10``) to its value: the mean (or the metric's ``summarise``)
    over the users it judged for per-user metrics, the catalogue-level value otherwise. ``per_user`` holds, for
    per-user metrics only, the value of each user in ``users`` (aligned), for significance tests; NaN marks a
    user the metric could not judge. ``n_judged`` counts, for per-user metrics, the users with a value.
    ``seconds`` is the wall time of the whole evaluation, the model's scoring included.
    """

    metrics: dict[str, float]
    per_user: dict[str, np.ndarray]
    users: np.ndarray
    n_users: int
    seconds: float
    n_judged: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-compatible summary: metric values, number of users, seconds (per-user vectors omitted)."""
        return {"metrics": dict(self.metrics), "n_users": self.n_users, "seconds": self.seconds}


class _UserItems:
    """The distinct (user, item) pairs of a dataset for a fixed list of users, grouped by the user's position.

    ``mask(start, stop)`` is the dense boolean (stop - start, n_items) matrix of users ``start..stop-1``.
    """

    def __init__(self, dataset: Dataset, users: np.ndarray) -> None:
        n_items = dataset.n_items
        pair_users, pair_items = dataset.user_item_pairs()
        keys = np.unique(pair_users * n_items + pair_items)
        key_users = keys // n_items
        keys = keys[np.isin(key_users, users)]
        positions = np.searchsorted(users, keys // n_items)
        self.n_items = n_items
        self.positions = torch.from_numpy(positions)
        self.items = torch.from_numpy(keys % n_items)
        self.bounds = np.searchsorted(positions, np.arange(len(users) + 1))

    def counts(self) -> torch.Tensor:
        return torch.from_numpy(np.diff(self.bounds))

    def mask(self, start: int, stop: int) -> torch.Tensor:
        low, high = int(self.bounds[start]), int(self.bounds[stop])
        dense = torch.zeros(stop - start, self.n_items, dtype=torch.bool)
        dense[self.positions[low:high] - start, self.items[low:high]] = True
        return dense


def evaluate(
    model: Recommender,
    test: Dataset,
    *,
    metrics: Sequence[Any] = ("ndcg@10",),
    history: Dataset | None = None,
    batch_size: int = 1024,
    context: dict[str, Any] | None = None,
    progress: bool = False,
) -> EvaluationResult:
    """Rank the whole catalogue for every user with test interactions and compute ``metrics`` on the result.

    ``metrics`` are :class:`Metric` instances or specs such as ``"ndcg@10"`` or ``{"id": "ild", "k": 10}``
    (see :func:`parse_metric`).
    ``history`` (same id maps as the model) holds the items to exclude from each user's ranking; without it
    the model's training items are excluded. Relevant items are never excluded (see the module docstring).
    Metrics receive the context entries they need (:mod:`cinesync.evaluation.context`), built once, and
    ``context`` (the caller's entries, such as ``outcomes`` or ``item_embeddings``).

    Raises :class:`~cinesync.errors.DataError` when ``test`` or ``history`` does not share the model's id maps
    or ``test`` is empty, and :class:`~cinesync.errors.CineSyncError` when the model returns scores of the
    wrong shape or non-finite scores, a metric needs a context entry that is missing or returns a value of
    the wrong shape, or a rating-error metric is asked of a model that does not predict ratings.
    """
    started = time.perf_counter()
    judges = _build_metrics(metrics)
    if batch_size < 1:
        raise CineSyncError(f"batch_size must be at least 1, got {batch_size}")
    n_items = model.n_items
    for role, dataset in (("test", test), ("history", history)):
        if dataset is not None and (dataset.items != model.items or dataset.users != model.users):
            raise DataError(
                f"the {role} dataset {dataset.name!r} does not share the id maps {type(model).__name__} was "
                "trained with: split one dataset into training and test parts"
            )
    if len(test) == 0:
        raise DataError(f"the test dataset {test.name!r} has no interactions to evaluate on")

    user_index = np.unique(test.interactions["user"].to_numpy(np.int64))
    relevant = _UserItems(test, user_index)
    excluded = None if history is None else _UserItems(history, user_index)
    metric_context = build_context(
        set().union(*(metric.needs for metric in judges)),
        model=model,
        test=test,
        history=history,
        users=user_index,
        supplied=context,
    )
    for metric in judges:
        missing = sorted(metric.needs - metric_context.keys())
        if missing:
            raise CineSyncError(f"metric {metric.name} needs context {', '.join(missing)}, which is missing")
    depth = min(max((m.k for m in judges if m.k is not None), default=1), n_items)

    scorers = [metric for metric in judges if metric.needs_scores]
    ratings = metric_context.get("ratings") if any("ratings" in m.needs for m in scorers) else None
    users = torch.from_numpy(user_index)
    n_relevant = relevant.counts()
    parts: list[tuple[torch.Tensor, ...]] = []
    scored_parts: dict[str, list[torch.Tensor]] = {metric.name: [] for metric in scorers}
    for start in _batches(len(users), batch_size, progress):
        stop = min(start + batch_size, len(users))
        batch = users[start:stop]
        with torch.no_grad():
            scores = model.score(batch)
        _check_scores(model, scores, (len(batch), n_items))
        is_relevant = relevant.mask(start, stop)
        seen = excluded.mask(start, stop) if excluded is not None else model.seen_mask(batch)
        masked = scores.float().masked_fill(seen & ~is_relevant, float("-inf"))
        parts.append(_rank(masked, is_relevant, depth))
        if scorers:
            top_items, top_hits, rank = parts[-1]
            scored = ScoredBatch(
                users=batch,
                scores=masked,
                relevant=is_relevant,
                excluded=seen,
                lists=RankedLists(batch, top_items, top_hits, n_relevant[start:stop], rank, n_items),
                ratings=ratings.batch(start, stop) if ratings is not None else None,
            )
            for metric in scorers:
                value = metric.compute_batch(scored, metric_context)
                _check_shape(metric, value, (len(batch),))
                scored_parts[metric.name].append(value)
    items, hits, first_relevant_rank = (torch.cat(column) for column in zip(*parts, strict=True))
    lists = RankedLists(
        users=users,
        items=items,
        hits=hits,
        n_relevant=n_relevant,
        first_relevant_rank=first_relevant_rank,
        n_items=n_items,
    )

    values: dict[str, float] = {}
    per_user: dict[str, np.ndarray] = {}
    n_judged: dict[str, int] = {}
    for metric in judges:
        if metric.needs_scores:
            value = torch.cat(scored_parts[metric.name])
        else:
            value = metric.compute(lists, metric_context)
            _check_shape(metric, value, (len(users),) if metric.per_user else ())
        if metric.per_user:
            per_user[metric.name] = value.detach().cpu().double().numpy()
            judged = ~np.isnan(per_user[metric.name])
            n_judged[metric.name] = int(judged.sum())
            # Users a metric cannot judge are NaN and left out; a metric that judged nobody is NaN itself.
            values[metric.name] = (
                metric.summarise(per_user[metric.name][judged]) if judged.any() else math.nan
            )
        else:
            values[metric.name] = float(value)
    return EvaluationResult(
        metrics=values,
        per_user=per_user,
        users=user_index,
        n_users=len(user_index),
        seconds=time.perf_counter() - started,
        n_judged=n_judged,
    )


def _build_metrics(metrics: Sequence[Any]) -> list[Metric]:
    if isinstance(metrics, str):
        metrics = [metrics]
    built = [m if isinstance(m, Metric) else parse_metric(m) for m in metrics]
    if not built:
        raise CineSyncError("evaluate needs at least one metric, such as 'ndcg@10'")
    for metric in built:
        if metric.needs_scores and not metric.per_user:
            raise CineSyncError(
                f"metric {metric.name} ({type(metric).__name__}) sets needs_scores, so it must be per-user: "
                "the evaluator concatenates its per-batch values"
            )
    names = [m.name for m in built]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise CineSyncError(f"metric(s) {', '.join(repeated)} requested more than once")
    return built


def _batches(n_users: int, batch_size: int, progress: bool) -> Iterable[int]:
    starts = range(0, n_users, batch_size)
    if not progress:
        return starts
    from rich.progress import track

    return track(starts, description="evaluating", total=len(starts))


def _check_shape(metric: Metric, value: torch.Tensor, expected: tuple[int, ...]) -> None:
    if tuple(value.shape) != expected:
        raise CineSyncError(
            f"metric {metric.name} ({type(metric).__name__}) returned shape {tuple(value.shape)}, "
            f"expected {expected}"
        )


def _check_scores(model: Recommender, scores: torch.Tensor, expected: tuple[int, int]) -> None:
    name = type(model).__name__
    if tuple(scores.shape) != expected:
        raise CineSyncError(f"{name}.score returned shape {tuple(scores.shape)}, expected {expected}")
    if not bool(torch.isfinite(scores).all()):
        bad = "NaN" if bool(torch.isnan(scores).any()) else "infinite"
        raise CineSyncError(f"{name}.score returned {bad} scores; scores must be finite")


def _rank(
    scores: torch.Tensor, relevant: torch.Tensor, depth: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-``depth`` items, hit flags and first relevant rank of one batch; excluded items score -inf."""
    top_scores, top_items = torch.topk(scores, depth, dim=1)
    empty = top_scores == float("-inf")
    hits = relevant.gather(1, top_items) & ~empty
    best_relevant = torch.where(relevant, scores, float("-inf")).amax(1, keepdim=True)
    ahead = (scores > best_relevant).sum(1)
    # Inside the top K the rank is where topk put the first hit, so MRR@k agrees with HR@k under ties.
    first_hit = hits.to(torch.uint8).argmax(1) + 1
    rank = torch.where(hits.any(1), first_hit, (ahead + 1).clamp(min=depth + 1))
    return top_items.masked_fill(empty, -1), hits, rank
