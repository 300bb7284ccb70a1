"""Outcome logs: validation, loading and the simulated log."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cinesync.data.dataset import Dataset
from cinesync.data.outcomes import (
    COMPLETION_SHARE,
    RUNTIME_MINUTES,
    generate_outcome_log,
    load_outcome_log,
    validate_outcome_log,
)
from cinesync.errors import DataError
from cinesync.testing.conformance import toy_dataset


@pytest.fixture
def data() -> Dataset:
    return toy_dataset()


def log_frame(**changes: list) -> pd.DataFrame:
    columns = {
        "user": ["u0", "u1"],
        "item": ["m0", "m3"],
        "timestamp": [2_000, 1_500],
        "clicked": [True, False],
        "watch_seconds": [3_000.0, 0.0],
        "completed": [False, False],
    }
    return pd.DataFrame({**columns, **changes})


def test_validation_maps_ids_to_indices(data: Dataset) -> None:
    validated = validate_outcome_log(log_frame(), data)
    assert validated["user"].tolist() == data.users.index(["u0", "u1"]).tolist()
    assert validated["item"].tolist() == data.items.index(["m0", "m3"]).tolist()
    assert validated["user_id"].tolist() == ["u0", "u1"]
    assert validated["clicked"].dtype == bool


def test_validation_accepts_zero_one_flags_and_datetimes(data: Dataset) -> None:
    validated = validate_outcome_log(
        log_frame(clicked=[1, 0], completed=[0, 0], timestamp=pd.to_datetime([2, 3], unit="s")), data
    )
    assert validated["clicked"].tolist() == [True, False]
    assert validated["timestamp"].tolist() == [2, 3]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"user": ["u0", "nobody"]}, "unknown user id\\(s\\) 'nobody'"),
        ({"item": ["m0", "m999"]}, "unknown item id\\(s\\) 'm999'"),
        ({"watch_seconds": [-1.0, 0.0]}, "non-negative"),
        ({"completed": [False, True]}, "row 1: an impression that was not clicked"),
        ({"clicked": ["yes", "no"]}, "'clicked' must be boolean"),
        ({"timestamp": [1.5, 2.5]}, "integer seconds"),
        ({"clicked": [True, None]}, "missing values in column\\(s\\) \\['clicked'\\]"),
    ],
)
def test_validation_errors_name_the_problem(data: Dataset, changes: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        validate_outcome_log(log_frame(**changes), data)


def test_a_missing_column_is_named(data: Dataset) -> None:
    with pytest.raises(DataError, match="lacks column\\(s\\) \\['watch_seconds'\\]"):
        validate_outcome_log(log_frame().drop(columns="watch_seconds"), data)


def test_load_csv_and_parquet(data: Dataset, tmp_path: Path) -> None:
    log_frame().to_csv(tmp_path / "log.csv", index=False)
    log_frame().to_parquet(tmp_path / "log.parquet")
    from_csv = load_outcome_log(tmp_path / "log.csv", data)
    from_parquet = load_outcome_log(tmp_path / "log.parquet", data)
    pd.testing.assert_frame_equal(from_csv, from_parquet, check_dtype=False)
    with pytest.raises(DataError, match="does not exist"):
        load_outcome_log(tmp_path / "missing.csv", data)
    (tmp_path / "log.json").write_text("{}")
    with pytest.raises(DataError, match=r"write it as \.csv or \.parquet"):
        load_outcome_log(tmp_path / "log.json", data)


def test_generated_log_is_deterministic_per_seed(data: Dataset) -> None:
    first = generate_outcome_log(data, seed=3)
    pd.testing.assert_frame_equal(first, generate_outcome_log(data, seed=3))
    assert not first.equals(generate_outcome_log(data, seed=4))


def test_generated_log_is_plausible(data: Dataset) -> None:
    log = generate_outcome_log(data, impressions_per_user=8)
    assert len(log) == data.n_users * 8
    assert (log.groupby("user")["item"].nunique() == 8).all()  # distinct items per user
    assert 0.0 < log["clicked"].mean() < 1.0
    assert log["timestamp"].min() > data.interactions["timestamp"].max()
    assert (log.loc[~log["clicked"], "watch_seconds"] == 0).all()
    assert not (log["completed"] & ~log["clicked"]).any()
    # Every toy item is a movie: watched at most the longest runtime, completed ones at least 90 % of the shortest.
    low, high = (minutes * 60 for minutes in RUNTIME_MINUTES["movie"])
    assert log["watch_seconds"].max() <= high
    assert (log.loc[log["completed"], "watch_seconds"] >= COMPLETION_SHARE * low).all()
    assert 0 < log["completed"].sum() < log["clicked"].sum()


def test_generated_log_shows_each_user_their_latest_items(data: Dataset) -> None:
    log = generate_outcome_log(data, impressions_per_user=8)
    latest = {user: sequence[-1] for user, sequence in enumerate(data.sequences())}
    shown = log.groupby("user")["item"].apply(set)
    assert all(latest[user] in items for user, items in shown.items())


def test_too_many_impressions_are_refused(data: Dataset) -> None:
    with pytest.raises(DataError, match="impressions_per_user"):
        generate_outcome_log(data, impressions_per_user=data.n_items + 1)


def test_generated_log_works_without_genres_or_timestamps(data: Dataset) -> None:
    plain = data.with_interactions(data.interactions.assign(timestamp=-1))
    plain.catalog = plain.catalog.assign(genres=None)
    log = generate_outcome_log(plain, impressions_per_user=4)
    assert log["timestamp"].min() >= 1
    assert np.isfinite(log["watch_seconds"]).all()
