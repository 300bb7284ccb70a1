"""The evaluation context: what metrics read besides the ranked lists, built once per evaluation.

A metric names the entries it reads in ``Metric.needs``; :func:`build_context` builds only the entries some
requested metric needs, and never one the caller passed in ``evaluate(..., context=...)``. "Training data"
below is ``history`` when the evaluation has one, else the model's own training interactions. Entries:

* ``item_counts``: (n_items,) int64 tensor, training interactions per item (always present).
* ``n_items``: catalogue size (always present).
* ``item_users``: (n_items,) int64 tensor, distinct training users per item.
* ``n_users``: number of distinct users in the training data.
* ``item_genres``: (n_items, n_genres) float32 multi-hot tensor from the catalogue's ``genres`` lists; built
  with ``genre_vocabulary``, the genre of each column (sorted).
* ``item_features``: (n_items, n_features) float32 tensor of the catalogue's numeric feature columns (those
  beyond :data:`~cinesync.data.dataset.CATALOG_COLUMNS`), missing values as 0; built with
  ``item_feature_names``.
* ``catalog``: the catalogue DataFrame, one row per item index.
* ``ratings``: the evaluated users' rated test interactions (:class:`UserRatings`), for rating-error
  metrics; only for models whose class sets ``predicts_ratings = True``.

The caller supplies the entries that come from outside the dataset: ``outcomes`` (a logged outcome table,
see :mod:`cinesync.data.outcomes`) and ``item_embeddings`` ((n_items, d) float tensor).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import torch

from cinesync.data.dataset import CATALOG_COLUMNS, Dataset
from cinesync.errors import CineSyncError, DataError
from cinesync.evaluation.ranking import RatedPairs
from cinesync.interfaces import Recommender

#: Entries the caller passes through ``evaluate(..., context=...)``, with what each must be.
CALLER_ENTRIES = {
    "outcomes": "a logged outcome table from cinesync.data.outcomes (load_outcome_log or generate_outcome_log)",
    "item_embeddings": "an (n_items, d) float tensor of item embeddings, rows in item-index order",
}


class UserRatings:
    """The rated test interactions of the evaluated users, grouped by the user's position among them."""

    def __init__(self, test: Dataset, users: np.ndarray) -> None:
        frame = test.interactions
        rated = frame[frame["rating"].notna() & frame["user"].isin(users)]
        positions = np.searchsorted(users, rated["user"].to_numpy(np.int64))
        order = np.argsort(positions, kind="stable")
        self.positions = torch.from_numpy(positions[order])
        self.items = torch.from_numpy(rated["item"].to_numpy(np.int64)[order])
        self.ratings = torch.from_numpy(rated["rating"].to_numpy(np.float32)[order])
        self.bounds = np.searchsorted(positions[order], np.arange(len(users) + 1))

    def batch(self, start: int, stop: int) -> RatedPairs:
        """The rated pairs of users ``start..stop-1``, rows counted from ``start``."""
        low, high = int(self.bounds[start]), int(self.bounds[stop])
        return RatedPairs(
            rows=self.positions[low:high] - start, items=self.items[low:high], ratings=self.ratings[low:high]
        )


def build_context(
    needs: Iterable[str],
    *,
    model: Recommender,
    test: Dataset,
    history: Dataset | None,
    users: np.ndarray,
    supplied: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The context for metrics that need ``needs``: built entries plus the caller's ``supplied`` ones.

    ``users`` are the evaluated user indices (sorted). Needs that are neither built here nor supplied are
    left out; the evaluator reports them. Raises :class:`~cinesync.errors.DataError` when the data cannot
    provide an entry (no genres, no numeric features, no test ratings) and
    :class:`~cinesync.errors.CineSyncError` when ``ratings`` is needed for a model that does not predict
    ratings or a supplied outcome table is not validated.
    """
    supplied = dict(supplied or {})
    wanted = set(needs) - supplied.keys()
    catalog = (history if history is not None else test).catalog
    context: dict[str, Any] = {"n_items": model.n_items}
    if history is not None:
        context["item_counts"] = torch.from_numpy(history.item_counts())
    else:
        context["item_counts"] = torch.from_numpy(model.base_state()["item_counts"])
    if wanted & {"item_users", "n_users"}:
        context["item_users"], context["n_users"] = _training_users(model, history)
    if wanted & {"item_genres", "genre_vocabulary"}:
        context["item_genres"], context["genre_vocabulary"] = item_genres(catalog)
    if wanted & {"item_features", "item_feature_names"}:
        context["item_features"], context["item_feature_names"] = item_features(catalog)
    if "catalog" in wanted:
        context["catalog"] = catalog
    if "ratings" in wanted:
        context["ratings"] = _ratings(model, test, users)
    if "outcomes" in set(needs) and "outcomes" in supplied:
        _check_outcomes(supplied["outcomes"])
    return {**context, **supplied}


def item_genres(catalog: pd.DataFrame) -> tuple[torch.Tensor, list[str]]:
    """The (n_items, n_genres) multi-hot genre matrix of ``catalog`` and its sorted genre vocabulary.

    A genre cell is a list of names, a ``|``-separated string (MovieLens style) or missing.
    """
    per_item = [_genre_list(cell) for cell in catalog["genres"]] if "genres" in catalog else []
    vocabulary = sorted({genre for genres in per_item for genre in genres})
    if not vocabulary:
        raise DataError("a metric needs item genres, but the catalogue has no 'genres' values")
    column = {genre: position for position, genre in enumerate(vocabulary)}
    rows = [row for row, genres in enumerate(per_item) for _ in genres]
    columns = [column[genre] for genres in per_item for genre in genres]
    matrix = torch.zeros(len(catalog), len(vocabulary))
    matrix[torch.tensor(rows, dtype=torch.long), torch.tensor(columns, dtype=torch.long)] = 1.0
    return matrix, vocabulary


def item_features(catalog: pd.DataFrame) -> tuple[torch.Tensor, list[str]]:
    """The numeric feature columns of ``catalog`` (beyond its fixed columns) as floats, missing values 0."""
    names = [
        str(column)
        for column in catalog.columns
        if column not in (*CATALOG_COLUMNS, "item_id") and pd.api.types.is_numeric_dtype(catalog[column])
    ]
    if not names:
        raise DataError(
            "a metric needs numeric item features, but the catalogue has no numeric columns besides "
            f"{', '.join(CATALOG_COLUMNS)}"
        )
    values = catalog[names].astype(np.float32).fillna(0.0).to_numpy(copy=True)
    return torch.from_numpy(values), names


def _genre_list(cell: Any) -> list[str]:
    if isinstance(cell, str):
        return [genre for genre in cell.split("|") if genre and genre != "(no genres listed)"]
    if isinstance(cell, list | tuple | np.ndarray):
        return [str(genre) for genre in cell]
    return []


def _training_users(model: Recommender, history: Dataset | None) -> tuple[torch.Tensor, int]:
    if history is not None:
        indptr, indices, _ = history.csr()
    else:
        state = model.base_state()
        indptr, indices = state["seen_indptr"], state["seen_indices"]
    # CSR rows hold distinct (user, item) pairs, so counting column entries counts distinct users.
    item_users = np.bincount(indices, minlength=model.n_items)
    return torch.from_numpy(item_users), int((np.diff(indptr) > 0).sum())


def _ratings(model: Recommender, test: Dataset, users: np.ndarray) -> UserRatings:
    if not model.predicts_ratings:
        raise CineSyncError(
            f"rating-error metrics (rmse, mae) need a model that predicts ratings, and "
            f"{type(model).__name__} only ranks items: evaluate a model whose class sets "
            "predicts_ratings = True, such as bias_baseline"
        )
    if not test.interactions["rating"].notna().any():
        raise DataError(f"rating-error metrics need test ratings, and dataset {test.name!r} has none")
    return UserRatings(test, users)


def _check_outcomes(outcomes: Any) -> None:
    from cinesync.data.outcomes import VALIDATED_COLUMNS

    columns = getattr(outcomes, "columns", ())
    missing = [column for column in VALIDATED_COLUMNS if column not in columns]
    if missing:
        raise CineSyncError(
            f"context entry 'outcomes' lacks column(s) {missing}: pass the table that "
            "cinesync.data.outcomes.load_outcome_log or validate_outcome_log returns"
        )
