"""User-group fairness and item exposure: who a model serves well, and which items it shows.

User side. Users are grouped by any attribute: categorical ones (gender, occupation) as they are; numeric ones
into bands, either given edges (MovieLens ages: ``<18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+``) or quantile
bands; ``activity`` is the number of training interactions in quantile bands (low / medium / high). For each
group the mean of each per-user metric is reported with the gap (max - min) and ratio (min / max) between
groups: Ekstrand et al., "All The Cool Kids, How Do They Fit In?", FAccT 2018, measure demographic utility
differences this way.

Item side. :func:`exposure` counts how often each item appears in the top-k lists; :func:`lorenz_curve` gives
the cumulative share of exposure held by the least-exposed share of items, with its Gini coefficient
(Fleder & Hosanagar 2009); :func:`popularity_curve` gives the cumulative share of recommendations taken by
the most popular items (Abdollahpouri et al., "The Unfairness of Popularity Bias in
Recommendation", 2019).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd

from cinesync.errors import CineSyncError

#: Lower edges of the MovieLens age bands after the first (ml-1m's README): <18, 18-24, ..., 50-55, 56+.
MOVIELENS_AGE_BANDS: tuple[float, ...] = (18, 25, 35, 45, 50, 56)
#: Quantiles that cut the activity distribution into low / medium / high.
ACTIVITY_QUANTILES: tuple[float, ...] = (1 / 3, 2 / 3)
_TERTILE_NAMES = ("low", "medium", "high")


def band_labels(edges: Sequence[float]) -> list[str]:
    """Labels of the bands that integer ``edges`` (ascending lower bounds) cut: ``[18, 25]`` gives
    ``["<18", "18-24", "25+"]``."""
    whole = [int(e) if float(e).is_integer() else e for e in edges]
    labels = [f"<{whole[0]}"]
    for low, high in pairwise(whole):
        labels.append(
            f"{low}-{high - 1}" if isinstance(low, int) and isinstance(high, int) else f"[{low}, {high})"
        )
    labels.append(f"{whole[-1]}+")
    return labels


def banded(values: Any, edges: Sequence[float]) -> pd.Categorical:
    """Numeric ``values`` assigned to the bands of :func:`band_labels` (ordered categories; NaN stays NaN)."""
    if list(edges) != sorted(set(edges)) or not edges:
        raise CineSyncError(f"band edges must be distinct and ascending, got {list(edges)}")
    numbers = np.asarray(values, dtype=np.float64)
    labels = band_labels(edges)
    codes = np.searchsorted(np.asarray(edges, dtype=np.float64), numbers, side="right")
    codes = np.where(np.isnan(numbers), -1, codes)
    return pd.Categorical.from_codes(codes, categories=labels, ordered=True)


def quantile_bands(values: Any, quantiles: Sequence[float] = ACTIVITY_QUANTILES) -> pd.Categorical:
    """Numeric ``values`` cut at their ``quantiles`` into ordered bands labelled with their value ranges,
    prefixed ``low`` / ``medium`` / ``high`` when there are three (``"low (5-31)"``).

    Ties at a cut go to the lower band, so a band may hold more than its share of users when values repeat.
    """
    numbers = np.asarray(values, dtype=np.float64)
    if not all(0 < q < 1 for q in quantiles) or list(quantiles) != sorted(set(quantiles)):
        raise CineSyncError(f"quantiles must be distinct, ascending and inside (0, 1), got {list(quantiles)}")
    cuts = np.unique(np.quantile(numbers, quantiles))
    codes = np.searchsorted(cuts, numbers, side="left")
    labels = []
    for band in range(len(cuts) + 1):
        members = numbers[codes == band]
        span = "empty" if members.size == 0 else _span(members.min(), members.max())
        labels.append(span)
    if len(labels) == 3:
        labels = [f"{name} ({span})" for name, span in zip(_TERTILE_NAMES, labels, strict=True)]
    return pd.Categorical.from_codes(codes, categories=labels, ordered=True)


def _span(low: float, high: float) -> str:
    def show(value: float) -> str:
        return str(int(value)) if float(value).is_integer() else f"{value:.3g}"

    return show(low) if low == high else f"{show(low)}-{show(high)}"


def user_groups(
    attributes: pd.DataFrame,
    attribute: str,
    *,
    bands: Mapping[str, Sequence[float]] | None = None,
    quantiles: Sequence[float] = ACTIVITY_QUANTILES,
) -> pd.Categorical:
    """The group of each row of ``attributes`` (one row per evaluated user) by column ``attribute``.

    Numeric columns are cut at ``bands[attribute]`` when given (``{"age": MOVIELENS_AGE_BANDS}``), else at
    their ``quantiles``; other columns are taken as categories. ``activity`` is an ordinary numeric column
    (training interactions per user) that the run directory provides. Raises
    :class:`~cinesync.errors.CineSyncError` naming the available columns when ``attribute`` is absent.
    """
    if attribute not in attributes.columns:
        available = ", ".join(c for c in attributes.columns if c not in ("user", "id")) or "none"
        raise CineSyncError(
            f"user attribute {attribute!r} is not available for this dataset (available: {available})"
        )
    column = attributes[attribute]
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        edges = (bands or {}).get(attribute)
        return banded(column, edges) if edges is not None else quantile_bands(column, quantiles)
    return pd.Categorical(column.astype("string").where(column.notna()))


@dataclass
class GroupMetrics:
    """Per-group means of per-user metrics for one attribute.

    ``groups`` lists the group labels with at least one user, ``sizes`` the users in each; ``means[metric]``
    the mean per group (aligned with ``groups``); ``gap[metric]`` is max - min over groups and ``ratio[metric]``
    min / max (1.0 is parity; NaN when the max is 0). Users with a missing attribute are left out, and so are
    users a metric could not judge (NaN values).
    """

    attribute: str
    groups: list[str]
    sizes: list[int]
    means: dict[str, list[float]]
    gap: dict[str, float]
    ratio: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "attribute": self.attribute,
            "groups": self.groups,
            "sizes": self.sizes,
            "means": self.means,
            "gap": self.gap,
            "ratio": self.ratio,
        }


def group_metrics(attribute: str, groups: pd.Categorical, per_user: Mapping[str, Any]) -> GroupMetrics:
    """Mean of each per-user metric vector of ``per_user`` (aligned with ``groups``) per group, with the gap
    and ratio between the best- and worst-served groups."""
    codes = np.asarray(groups.codes)
    present = [code for code in range(len(groups.categories)) if np.any(codes == code)]
    sizes = [int(np.sum(codes == code)) for code in present]
    means: dict[str, list[float]] = {}
    gap: dict[str, float] = {}
    ratio: dict[str, float] = {}
    for metric, values in per_user.items():
        vector = np.asarray(values, dtype=np.float64)
        if vector.shape != codes.shape:
            raise CineSyncError(f"per-user {metric} has {vector.size} values for {codes.size} users")
        group_means = [_mean(vector[codes == code]) for code in present]
        means[metric] = group_means
        judged = [m for m in group_means if not np.isnan(m)]
        high, low = max(judged, default=float("nan")), min(judged, default=float("nan"))
        gap[metric] = high - low
        ratio[metric] = low / high if high > 0 else float("nan")
    return GroupMetrics(
        attribute=attribute,
        groups=[str(groups.categories[code]) for code in present],
        sizes=sizes,
        means=means,
        gap=gap,
        ratio=ratio,
    )


def _mean(values: np.ndarray) -> float:
    """Mean over judged users (NaN marks a user a metric could not judge); NaN when none was judged."""
    judged = values[~np.isnan(values)]
    return float(judged.mean()) if judged.size else float("nan")


def exposure(top_items: np.ndarray, n_items: int) -> np.ndarray:
    """How many top-k lists each item index appears in; ``-1`` padding is ignored."""
    items = np.asarray(top_items).ravel()
    return np.bincount(items[items >= 0], minlength=n_items)


def lorenz_curve(counts: Any, points: int = 101) -> tuple[np.ndarray, np.ndarray, float]:
    """Lorenz curve of ``counts`` (exposure or interactions per item) and its Gini coefficient.

    Returns ``(x, y, gini)``: ``y[j]`` is the share of the total held by the ``x[j]`` least-counted share of
    items, sampled at ``points`` evenly spaced ``x`` from 0 to 1. Gini is 0 for equal counts and approaches 1
    when one item holds everything: ``G = sum_i (2i - n - 1) c_(i) / (n sum c)`` over ascending counts.
    """
    values = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = values.size, values.sum()
    if n == 0 or total <= 0:
        raise CineSyncError("a Lorenz curve needs at least one item with a positive count")
    cumulative = np.concatenate([[0.0], np.cumsum(values) / total])
    x = np.linspace(0.0, 1.0, points)
    y = np.interp(x * n, np.arange(n + 1), cumulative)
    gini = float(np.sum((2 * np.arange(1, n + 1) - n - 1) * values) / (n * total))
    return x, y, gini


def popularity_curve(
    top_items: np.ndarray, item_counts: Any, points: int = 60
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative share of recommendations going to the most popular items, next to the training data's.

    Items are ordered by training interactions (most popular first, ties by index). Returns ``(x, recommended,
    interactions)`` at ``points`` catalogue shares ``x`` spaced evenly on a log scale from one item to the
    whole catalogue: the share of recommended slots, and of training interactions, taken by the ``x`` most
    popular share of items. A model with no popularity bias follows the training curve; one that recommends
    only the head reaches 1 at once.
    """
    counts = np.asarray(item_counts, dtype=np.float64)
    n_items = counts.size
    if points < 2 or n_items == 0:
        raise CineSyncError("a popularity curve needs at least two points and one item")
    rank = np.empty(n_items, dtype=np.int64)
    rank[np.lexsort((np.arange(n_items), -counts))] = np.arange(n_items)
    items = np.asarray(top_items).ravel()
    items = items[items >= 0]
    recommended = np.cumsum(np.bincount(rank[items], minlength=n_items)) / max(items.size, 1)
    interactions = np.cumsum(counts[np.argsort(rank)]) / max(counts.sum(), 1.0)
    heads = np.unique(np.geomspace(1, n_items, points).round().astype(np.int64))
    return heads / n_items, recommended[heads - 1], interactions[heads - 1]


def average_recommended_popularity(top_items: np.ndarray, item_counts: Any) -> float:
    """Mean training interaction count of the recommended items over all recommended slots (ARP,
    Abdollahpouri et al. 2019, averaged over slots rather than users)."""
    items = np.asarray(top_items).ravel()
    items = items[items >= 0]
    counts = np.asarray(item_counts, dtype=np.float64)
    return float(counts[items].mean()) if items.size else 0.0
