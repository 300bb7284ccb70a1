"""User groups, per-group metrics and item exposure curves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cinesync.errors import CineSyncError
from cinesync.evaluation.fairness import (
    MOVIELENS_AGE_BANDS,
    band_labels,
    exposure,
    group_metrics,
    lorenz_curve,
    popularity_curve,
    user_groups,
)


def test_movielens_age_bands() -> None:
    assert band_labels(MOVIELENS_AGE_BANDS) == ["<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"]
    users = pd.DataFrame({"age": [7, 18, 24, 25, 49, 56, 73]})
    groups = user_groups(users, "age", bands={"age": MOVIELENS_AGE_BANDS})
    assert list(groups.astype(str)) == ["<18", "18-24", "18-24", "25-34", "45-49", "56+", "56+"]


def test_activity_is_cut_into_low_medium_high_tertiles() -> None:
    users = pd.DataFrame({"activity": np.arange(1, 10)})
    groups = user_groups(users, "activity")
    assert list(groups.categories) == ["low (1-3)", "medium (4-6)", "high (7-9)"]


def test_categorical_attributes_are_taken_as_they_are() -> None:
    groups = user_groups(pd.DataFrame({"gender": ["F", "M", "M"]}), "gender")
    assert sorted(groups.categories) == ["F", "M"]


def test_missing_attribute_names_the_available_ones() -> None:
    with pytest.raises(CineSyncError, match="available: gender"):
        user_groups(pd.DataFrame({"user": [0], "gender": ["F"]}), "age")


def test_group_means_gap_and_ratio() -> None:
    groups = pd.Categorical(["F", "M", "M", "F"])
    table = group_metrics("gender", groups, {"ndcg": np.array([0.2, 0.4, 0.6, np.nan])})
    assert table.groups == ["F", "M"] and table.sizes == [2, 2]
    assert table.means["ndcg"] == pytest.approx([0.2, 0.5])  # the NaN user is not judged
    assert table.gap["ndcg"] == pytest.approx(0.3)
    assert table.ratio["ndcg"] == pytest.approx(0.4)


def test_lorenz_curve_and_gini_of_equal_and_concentrated_exposure() -> None:
    x, y, gini = lorenz_curve(np.ones(10))
    np.testing.assert_allclose(y, x)
    assert gini == pytest.approx(0.0)
    _, _, concentrated = lorenz_curve(np.array([0, 0, 0, 10]))
    assert concentrated == pytest.approx(0.75)  # (n - 1) / n for one item holding everything


def test_exposure_ignores_padding() -> None:
    assert exposure(np.array([[0, 1], [1, -1]]), 3).tolist() == [1, 2, 0]


def test_popularity_curve_of_a_head_only_recommender_reaches_one_at_once() -> None:
    counts = np.array([1, 50, 3, 20])  # item 1 is the most popular
    shares, recommended, interactions = popularity_curve(np.array([[1], [1]]), counts, points=4)
    assert shares[0] == 0.25 and recommended[0] == 1.0
    assert interactions[0] == pytest.approx(50 / 74)
    assert recommended[-1] == interactions[-1] == pytest.approx(1.0)
