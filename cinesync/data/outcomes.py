"""Logged outcomes of shown recommendations: the data behind click, watch-time and retention metrics.

An outcome log has one row per impression (an item shown to a user) with the columns

* ``user``, ``item``: the source's own ids, as in the dataset the model was trained on;
* ``timestamp``: int seconds since the epoch when the item was shown;
* ``clicked``: bool, the user opened the item;
* ``watch_seconds``: float >= 0, how long they watched (0 when not clicked);
* ``completed``: bool, they watched it to the end (only a clicked item can be completed).

:func:`validate_outcome_log` checks such a table against a dataset and returns it with ``user`` and ``item``
replaced by the dataset's indices (the ids move to ``user_id`` and ``item_id``), sorted by user and time:
the form metrics read from the evaluation context entry ``outcomes``. :func:`load_outcome_log` reads a
CSV or Parquet file; :func:`generate_outcome_log` simulates a plausible log for a dataset, for trying the
business metrics before real logs exist.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from cinesync.data.dataset import Dataset
from cinesync.errors import DataError, UnknownIdError

#: Columns of an outcome log as written in files, with external user and item ids.
OUTCOME_COLUMNS = ("user", "item", "timestamp", "clicked", "watch_seconds", "completed")
#: Columns of a validated log: indices in ``user``/``item``, the external ids kept beside them.
VALIDATED_COLUMNS = (*OUTCOME_COLUMNS, "user_id", "item_id")

#: Runtime ranges in minutes by item type (feature films; TV episodes).
RUNTIME_MINUTES = {"movie": (90.0, 150.0), "tv": (20.0, 50.0)}
#: A watch counts as complete from this share of the runtime on (credits are rarely watched).
COMPLETION_SHARE = 0.9
_DAY = 86_400
#: Users simulated at once: bounds the (users x items) arrays held in memory.
_USER_CHUNK = 512


def validate_outcome_log(frame: pd.DataFrame, dataset: Dataset) -> pd.DataFrame:
    """``frame`` (columns :data:`OUTCOME_COLUMNS`, external ids) checked against ``dataset``, with indices.

    Raises :class:`~cinesync.errors.DataError` naming the problem: a missing column, missing values, a user or
    item id the dataset does not know, a non-integer timestamp, a negative or non-finite watch time, or an
    impression that was completed or watched without being clicked.
    """
    missing = [column for column in OUTCOME_COLUMNS if column not in frame.columns]
    if missing:
        raise DataError(f"the outcome log lacks column(s) {missing}; it needs {list(OUTCOME_COLUMNS)}")
    empty = [column for column in OUTCOME_COLUMNS if frame[column].isna().any()]
    if empty:
        raise DataError(f"the outcome log has missing values in column(s) {empty}")
    try:
        users = dataset.users.index(frame["user"].tolist())
        items = dataset.items.index(frame["item"].tolist())
    except UnknownIdError as error:
        raise DataError(f"the outcome log does not match dataset {dataset.name!r}: {error}") from None
    timestamps = frame["timestamp"]
    if pd.api.types.is_datetime64_any_dtype(timestamps):
        # Whatever the unit and zone, seconds since the epoch.
        timestamps = (timestamps - pd.Timestamp(0, tz=timestamps.dt.tz)) // pd.Timedelta(seconds=1)
    elif not pd.api.types.is_integer_dtype(timestamps):
        raise DataError(
            f"outcome log timestamps must be integer seconds or datetimes, not {timestamps.dtype}"
        )
    clicked = _booleans(frame["clicked"], "clicked")
    completed = _booleans(frame["completed"], "completed")
    watch = frame["watch_seconds"].to_numpy(np.float64)
    if not np.isfinite(watch).all() or (watch < 0).any():
        raise DataError("outcome log watch_seconds must be finite and non-negative")
    unclicked = ~clicked & (completed | (watch > 0))
    if unclicked.any():
        row = int(np.flatnonzero(unclicked)[0])
        raise DataError(
            f"outcome log row {row}: an impression that was not clicked cannot be watched or completed"
        )
    validated = pd.DataFrame(
        {
            "user": users,
            "item": items,
            "timestamp": timestamps.to_numpy(np.int64),
            "clicked": clicked,
            "watch_seconds": watch,
            "completed": completed,
            "user_id": frame["user"].to_numpy(),
            "item_id": frame["item"].to_numpy(),
        }
    )
    return validated.sort_values(["user", "timestamp"], kind="stable").reset_index(drop=True)


def load_outcome_log(path: str | os.PathLike[str], dataset: Dataset) -> pd.DataFrame:
    """Read an outcome log from a ``.csv`` or ``.parquet`` file and validate it against ``dataset``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"outcome log {str(path)!r} does not exist")
    if path.suffix == ".csv":
        frame = pd.read_csv(path)
    elif path.suffix in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
    else:
        raise DataError(f"outcome log {str(path)!r}: write it as .csv or .parquet, not {path.suffix!r}")
    return validate_outcome_log(frame, dataset)


def generate_outcome_log(dataset: Dataset, *, seed: int = 0, impressions_per_user: int = 20) -> pd.DataFrame:
    """A simulated, validated outcome log for every user of ``dataset``; the same for the same ``seed``.

    Each user is shown ``impressions_per_user`` distinct items: up to a quarter from their own latest
    interactions (the items a leave-last-out split holds out), half drawn in proportion to popularity times
    genre affinity (their interests), the rest in proportion to popularity alone. The click probability rises
    with the item's popularity and the user's affinity, ``p = 0.03 + 0.25·pop + 0.5·affinity`` with ``pop``
    the item's log-popularity scaled to [0, 1] and ``affinity`` the cosine between the item's genres and the
    user's history genres (1 for their own items). A click watches part of a runtime drawn per item (movies
    90-150 minutes, TV 20-50, from the catalogue's ``type`` or else the interactions' ``domain``): at least
    90 % of it, a completion, with probability ``0.3 + 0.6·affinity``, else 5-90 % of it. Impressions fall
    within 14 days after the dataset's last timestamp (after 0 when it has none).
    """
    if not 1 <= impressions_per_user <= dataset.n_items:
        raise DataError(
            f"impressions_per_user must be between 1 and the {dataset.n_items} items, got {impressions_per_user}"
        )
    rng = np.random.default_rng(seed)
    counts = dataset.item_counts().astype(np.float64)
    popularity = np.log1p(counts) / max(float(np.log1p(counts.max())), 1e-12)
    runtime = _runtimes(dataset, rng)
    profiles, unit_genres = _genre_profiles(dataset)
    own = _latest_items(dataset, impressions_per_user // 4)
    n_interest = impressions_per_user // 2

    shown_parts, affinity_parts = [], []
    for start in range(0, dataset.n_users, _USER_CHUNK):
        rows = slice(start, min(start + _USER_CHUNK, dataset.n_users))
        affinity = profiles[rows] @ unit_genres.T
        chunk_own = own[rows]
        blocked = np.zeros_like(affinity, dtype=bool)
        owned_rows, owned_slots = np.nonzero(chunk_own >= 0)
        blocked[owned_rows, chunk_own[owned_rows, owned_slots]] = True
        # Gumbel top-k: the k largest of log(weight) + Gumbel noise are k distinct draws ∝ weight.
        interest = np.log(counts + 1.0) + np.log(affinity + 0.05) + rng.gumbel(size=affinity.shape)
        picked = _top(np.where(blocked, -np.inf, interest), n_interest)
        np.put_along_axis(blocked, picked, True, axis=1)
        popular = np.log(counts + 1.0) + rng.gumbel(size=affinity.shape)
        rest = _top(np.where(blocked, -np.inf, popular), impressions_per_user - n_interest)
        # Own items first, then interests, then popular ones, keeping the first impressions_per_user.
        candidates = np.concatenate([chunk_own, picked, rest], axis=1)
        order = np.argsort(candidates < 0, axis=1, kind="stable")[:, :impressions_per_user]
        shown = np.take_along_axis(candidates, order, axis=1)
        is_own = np.take_along_axis(
            np.concatenate([chunk_own >= 0, np.zeros_like(picked, bool), np.zeros_like(rest, bool)], 1),
            order,
            axis=1,
        )
        shown_parts.append(shown)
        affinity_parts.append(np.where(is_own, 1.0, np.take_along_axis(affinity, shown, axis=1)))

    items = np.concatenate(shown_parts).ravel()
    affinity = np.concatenate(affinity_parts).ravel()
    users = np.repeat(np.arange(dataset.n_users), impressions_per_user)
    clicked = rng.random(len(items)) < np.clip(0.03 + 0.25 * popularity[items] + 0.5 * affinity, 0.0, 0.95)
    completes = rng.random(len(items)) < 0.3 + 0.6 * affinity
    share = np.where(
        completes,
        rng.uniform(COMPLETION_SHARE, 1.0, len(items)),
        rng.uniform(0.05, COMPLETION_SHARE, len(items)),
    )
    watch = np.where(clicked, share * runtime[items], 0.0)
    last = int(dataset.interactions["timestamp"].max()) if dataset.has_timestamps else 0
    frame = pd.DataFrame(
        {
            "user": dataset.users.lookup(users),
            "item": dataset.items.lookup(items),
            "timestamp": (last + 1 + rng.integers(0, 14 * _DAY, len(items))).astype(np.int64),
            "clicked": clicked,
            "watch_seconds": watch,
            "completed": clicked & (watch >= COMPLETION_SHARE * runtime[items]),
        }
    )
    return validate_outcome_log(frame, dataset)


def _top(weights: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` largest entries of each row, largest first (blocked -inf entries last)."""
    if k == 0:
        return np.zeros((len(weights), 0), np.int64)
    top = np.argpartition(-weights, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(weights, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def _booleans(column: pd.Series, name: str) -> np.ndarray:
    if pd.api.types.is_bool_dtype(column):
        return column.to_numpy(bool)
    values = set(pd.unique(column))
    if not values <= {0, 1}:
        raise DataError(
            f"outcome log column {name!r} must be boolean (or 0/1), found {sorted(map(str, values))[:5]}"
        )
    return column.to_numpy(np.int64) == 1


def _genre_profiles(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Unit-length genre profiles of users (summed over their history) and of items; zeros without genres."""
    from cinesync.evaluation.context import item_genres

    try:
        genres = item_genres(dataset.catalog)[0].numpy().astype(np.float64)
    except DataError:
        genres = np.zeros((dataset.n_items, 1))
    users, items = dataset.user_item_pairs()
    profiles = np.zeros((dataset.n_users, genres.shape[1]))
    np.add.at(profiles, users, genres[items])
    return _unit_rows(profiles), _unit_rows(genres)


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def _latest_items(dataset: Dataset, n: int) -> np.ndarray:
    """(n_users, n) each user's ``n`` most recent distinct items, most recent first, -1 padded."""
    latest = np.full((dataset.n_users, n), -1, np.int64)
    for user, sequence in enumerate(dataset.sequences()):
        recent = sequence[::-1]
        _, first = np.unique(recent, return_index=True)
        distinct = recent[np.sort(first)][:n]
        latest[user, : len(distinct)] = distinct
    return latest


def _runtimes(dataset: Dataset, rng: np.random.Generator) -> np.ndarray:
    """Seconds of runtime per item, drawn from its type's range (movie unless the data says tv)."""
    kinds = dataset.catalog["type"] if "type" in dataset.catalog else pd.Series([None] * dataset.n_items)
    domains = dataset.interactions.groupby("item")["domain"].first().reindex(range(dataset.n_items))
    kind = kinds.where(kinds.notna(), domains.to_numpy()).astype(str).str.lower().to_numpy()
    is_tv = np.isin(kind, ["tv", "series", "episode", "show"])
    low = np.where(is_tv, RUNTIME_MINUTES["tv"][0], RUNTIME_MINUTES["movie"][0])
    high = np.where(is_tv, RUNTIME_MINUTES["tv"][1], RUNTIME_MINUTES["movie"][1])
    return rng.uniform(low, high) * 60.0
