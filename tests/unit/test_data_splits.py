from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cinesync.data import (
    Dataset,
    build_dataset,
    filter_interactions,
    leave_last_out,
    load_dataset,
    random_split,
    split_dataset,
    temporal_split,
)
from cinesync.errors import DataError


def make_dataset(n_users: int = 40, n_items: int = 25, n: int = 600, seed: int = 7) -> Dataset:
    """Random interactions with coarse timestamps, so many share a time."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "user": rng.integers(0, n_users, n) * 10,
            "item": rng.integers(0, n_items, n) + 100,
            "timestamp": rng.integers(0, 20, n),
            "rating": rng.integers(1, 6, n).astype(float),
        }
    )
    catalog = pd.DataFrame(
        {"title": [f"film {i}" for i in range(100, 100 + n_items)]},
        index=pd.Index(range(100, 100 + n_items), name="item_id"),
    )
    attributes = pd.DataFrame({"age": np.arange(n_users) + 20}, index=pd.Index(np.arange(n_users) * 10))
    return build_dataset("generated", frame, catalog, attributes)


def rows(dataset: Dataset) -> set[tuple[int, int, int]]:
    """The (user, item, timestamp) triples of a dataset's interactions."""
    frame = dataset.interactions
    return set(zip(frame["user"], frame["item"], frame["timestamp"], strict=True))


def assert_partition(parts: list[Dataset], whole: Dataset) -> None:
    assert sum(len(part) for part in parts) == len(whole)
    combined = pd.concat([part.interactions for part in parts]).sort_values(list(whole.interactions.columns))
    expected = whole.interactions.sort_values(list(whole.interactions.columns))
    pd.testing.assert_frame_equal(combined.reset_index(drop=True), expected.reset_index(drop=True))


# -- leave_last_out ----------------------------------------------------------------------------------------
def test_leave_last_out_holds_out_each_users_last_interactions_by_time() -> None:
    dataset = make_dataset()
    split = leave_last_out(dataset)
    assert split.valid is not None
    assert len(split.test) == len(split.valid) == dataset.n_users
    assert_partition([split.train, split.valid, split.test], dataset)
    for part, later in ((split.train, split.valid), (split.valid, split.test)):
        latest_before = part.interactions.groupby("user")["timestamp"].max()
        held = later.interactions.set_index("user")["timestamp"]
        assert (held >= latest_before.reindex(held.index)).all()


def test_leave_last_out_breaks_timestamp_ties_by_source_order() -> None:
    frame = pd.DataFrame({"user": [1, 1, 1, 1], "item": [9, 7, 8, 5], "timestamp": [5, 5, 5, 1]})
    split = leave_last_out(build_dataset("ties", frame))
    assert split.valid is not None
    # Among the three ratings at time 5 the file lists 9, 7, 8: the last one (8) is test, 7 validation.
    assert split.test.items.lookup(split.test.interactions["item"]) == [8]
    assert split.valid.items.lookup(split.valid.interactions["item"]) == [7]
    assert sorted(split.train.items.lookup(split.train.interactions["item"])) == [5, 9]


def test_leave_last_out_does_not_depend_on_row_order_without_ties() -> None:
    tied = make_dataset()
    distinct_times = tied.interactions.assign(timestamp=np.arange(len(tied.interactions)) * 7 % 1000)
    dataset = tied.with_interactions(distinct_times.drop_duplicates(["user", "timestamp"]))
    shuffled = dataset.with_interactions(dataset.interactions.sample(frac=1.0, random_state=3))
    first, second = leave_last_out(dataset), leave_last_out(shuffled)
    assert rows(first.test) == rows(second.test)
    assert first.valid is not None and second.valid is not None
    assert rows(first.valid) == rows(second.valid)


def test_leave_last_out_keeps_users_with_too_few_interactions_in_train() -> None:
    frame = pd.DataFrame({"user": [1, 1, 2, 2, 2], "item": [1, 2, 1, 2, 3], "timestamp": [1, 2, 1, 2, 3]})
    split = leave_last_out(build_dataset("short", frame))
    assert split.valid is not None
    assert split.train.users.lookup(split.train.interactions["user"]).count(1) == 2
    assert split.test.users.lookup(split.test.interactions["user"]) == [2]
    assert split.valid.users.lookup(split.valid.interactions["user"]) == [2]


def test_leave_last_out_without_validation_holds_out_n_per_user() -> None:
    dataset = make_dataset()
    split = leave_last_out(dataset, validation=False, n=2)
    assert split.valid is None
    eligible = int((dataset.user_counts() > 2).sum())
    assert len(split.test) == 2 * eligible
    assert_partition([split.train, split.test], dataset)


def test_leave_last_out_on_ml_latest_small_holds_out_one_interaction_per_user() -> None:
    split = leave_last_out(load_dataset("ml-latest-small"))
    assert split.valid is not None
    assert (len(split.test), len(split.valid), len(split.train)) == (610, 610, 100836 - 1220)


def test_leave_last_out_requires_timestamps() -> None:
    dataset = build_dataset("untimed", pd.DataFrame({"user": [1, 1], "item": [1, 2]}))
    with pytest.raises(DataError, match="'random' split"):
        leave_last_out(dataset)


# -- temporal_split ----------------------------------------------------------------------------------------
def test_temporal_split_cuts_all_users_at_one_time_with_ties_in_the_later_part() -> None:
    dataset = make_dataset()
    split = temporal_split(dataset, test_fraction=0.2, validation_fraction=0.1)
    assert split.valid is not None
    assert_partition([split.train, split.valid, split.test], dataset)
    train_times = split.train.interactions["timestamp"]
    valid_times = split.valid.interactions["timestamp"]
    test_times = split.test.interactions["timestamp"]
    assert train_times.max() < valid_times.min() <= valid_times.max() < test_times.min()
    assert len(split.test) >= 0.2 * len(dataset)
    assert len(split.valid) >= 0.1 * (len(dataset) - len(split.test))


def test_temporal_split_without_validation() -> None:
    split = temporal_split(make_dataset(), validation_fraction=0)
    assert split.valid is None
    assert split.train_valid is split.train


def test_temporal_split_refuses_to_leave_training_empty() -> None:
    frame = pd.DataFrame({"user": [1, 2], "item": [1, 2], "timestamp": [5, 5]})
    with pytest.raises(DataError, match="no training interactions"):
        temporal_split(build_dataset("same time", frame))


# -- random_split ------------------------------------------------------------------------------------------
def test_random_split_holds_out_a_rounded_fraction_of_each_user() -> None:
    dataset = make_dataset()
    split = random_split(dataset, test_fraction=0.25, validation_fraction=0)
    counts = dataset.user_counts()
    expected = np.where(counts >= 2, np.clip(np.round(0.25 * counts), 1, counts - 1), 0)
    np.testing.assert_array_equal(split.test.user_counts(), expected)
    assert_partition([split.train, split.test], dataset)


def test_random_split_carves_validation_from_the_remainder() -> None:
    dataset = make_dataset()
    split = random_split(dataset, test_fraction=0.2, validation_fraction=0.1)
    assert split.valid is not None
    assert_partition([split.train, split.valid, split.test], dataset)
    remainder = dataset.user_counts() - split.test.user_counts()
    expected = np.where(remainder >= 2, np.clip(np.round(0.1 * remainder), 1, remainder - 1), 0)
    np.testing.assert_array_equal(split.valid.user_counts(), expected)


def test_random_split_is_reproducible_with_a_seed_and_varies_across_seeds() -> None:
    dataset = make_dataset()
    first, again, other = (random_split(dataset, seed=s) for s in (1, 1, 2))
    pd.testing.assert_frame_equal(first.test.interactions, again.test.interactions)
    assert not first.test.interactions.equals(other.test.interactions)


def test_random_split_keeps_single_interaction_users_in_train() -> None:
    frame = pd.DataFrame({"user": [1, 2, 2, 2], "item": [1, 1, 2, 3]})
    split = random_split(build_dataset("tiny", frame), test_fraction=0.3, validation_fraction=0)
    assert split.test.users.lookup(split.test.interactions["user"]) == [2]
    assert split.train.users.lookup(split.train.interactions["user"]).count(1) == 1


# -- Split, dispatch ---------------------------------------------------------------------------------------
def test_train_valid_concatenates_train_and_validation_over_the_same_maps() -> None:
    dataset = make_dataset()
    split = leave_last_out(dataset)
    assert split.valid is not None
    combined = split.train_valid
    assert len(combined) == len(split.train) + len(split.valid)
    assert combined.items == dataset.items and combined.users == dataset.users


def test_split_dataset_dispatches_by_method_and_passes_options() -> None:
    split = split_dataset(make_dataset(), "random", seed=3, validation_fraction=0)
    assert split.method == "random" and split.valid is None


def test_split_dataset_rejects_an_unknown_method() -> None:
    with pytest.raises(DataError, match="leave_last_out, temporal, random"):
        split_dataset(make_dataset(), "by_genre")  # type: ignore[arg-type]


# -- filter_interactions -----------------------------------------------------------------------------------
def test_filter_drops_ratings_below_the_minimum() -> None:
    filtered = filter_interactions(make_dataset(), min_rating=4)
    assert (filtered.interactions["rating"] >= 4).all()


def test_filter_reindexes_contiguously_and_keeps_catalogue_and_attributes_aligned() -> None:
    dataset = make_dataset()
    filtered = filter_interactions(dataset, min_user_interactions=16)
    kept = [u for u, c in zip(dataset.users.ids, dataset.user_counts(), strict=True) if c >= 16]
    assert filtered.users.ids == kept
    assert filtered.interactions["user"].max() == filtered.n_users - 1
    assert filtered.interactions["item"].max() == filtered.n_items - 1
    assert filtered.catalog["title"].tolist() == [f"film {i}" for i in filtered.items.ids]
    assert filtered.user_attributes is not None
    assert filtered.user_attributes["age"].tolist() == [u // 10 + 20 for u in kept]
    original = dataset.interactions.assign(
        user=dataset.users.lookup(dataset.interactions["user"]),
        item=dataset.items.lookup(dataset.interactions["item"]),
    )
    assert len(filtered) == int(original["user"].isin(kept).sum())


def test_k_core_repeats_until_every_user_and_item_meets_the_minimum() -> None:
    # Dropping user 3 (one interaction) leaves item 30 with one interaction, which only a second pass drops.
    frame = pd.DataFrame({"user": [1, 1, 1, 2, 2, 3], "item": [10, 20, 30, 10, 20, 30]})
    dataset = build_dataset("chain", frame)
    once = filter_interactions(dataset, min_user_interactions=2, min_item_interactions=2)
    core = filter_interactions(dataset, min_user_interactions=2, min_item_interactions=2, k_core=True)
    assert once.users.ids == [1, 2] and once.items.ids == [10, 20, 30]
    assert core.users.ids == [1, 2] and core.items.ids == [10, 20]
    assert len(core) == 4


def test_filter_raises_when_nothing_remains() -> None:
    with pytest.raises(DataError, match="loosen the thresholds"):
        filter_interactions(make_dataset(), min_user_interactions=10_000)
