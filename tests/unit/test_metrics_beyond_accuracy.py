"""Beyond-accuracy, rating and business metrics against hand-computed values, and their evaluator support."""

from __future__ import annotations

import math
from importlib.metadata import entry_points
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
import torch

from cinesync.data.dataset import Dataset, build_dataset
from cinesync.errors import CineSyncError, DataError
from cinesync.evaluation import evaluate
from cinesync.evaluation.context import build_context
from cinesync.evaluation.ranking import RankedLists, RatedPairs, ScoredBatch
from cinesync.interfaces import Metric, ensure_component_of_kind
from cinesync.testing.conformance import toy_dataset
from cinesync.testing.fixed_scores import FixedScores
from cinesync_plugins.metrics.aplt import APLT
from cinesync_plugins.metrics.arp import ARP
from cinesync_plugins.metrics.auc import AUC
from cinesync_plugins.metrics.completion_rate import CompletionRate
from cinesync_plugins.metrics.ctr import CTR
from cinesync_plugins.metrics.entropy import Entropy
from cinesync_plugins.metrics.exposure_parity import ExposureParity
from cinesync_plugins.metrics.gini import Gini
from cinesync_plugins.metrics.ild import ILD
from cinesync_plugins.metrics.mae import MAE
from cinesync_plugins.metrics.novelty import Novelty
from cinesync_plugins.metrics.retention import Retention
from cinesync_plugins.metrics.rmse import RMSE
from cinesync_plugins.metrics.serendipity import Serendipity
from cinesync_plugins.metrics.watch_time import WatchTime
from cinesync_plugins.recommenders.bias_baseline import BiasBaseline
from cinesync_plugins.recommenders.popularity import Popularity

NAN = float("nan")
DAY = 86_400


def lists(items: list[list[int]], n_items: int, hits: list[list[int]] | None = None) -> RankedLists:
    hit_flags = (
        torch.tensor(hits, dtype=torch.bool)
        if hits
        else torch.zeros(len(items), len(items[0]), dtype=torch.bool)
    )
    return RankedLists(
        users=torch.arange(len(items)),
        items=torch.tensor(items),
        hits=hit_flags,
        n_relevant=torch.ones(len(items), dtype=torch.long),
        first_relevant_rank=torch.ones(len(items), dtype=torch.long),
        n_items=n_items,
    )


def scored(
    scores: list[list[float]],
    relevant: list[list[int]],
    excluded: list[list[int]] | None = None,
    ranked: RankedLists | None = None,
    ratings: RatedPairs | None = None,
) -> ScoredBatch:
    score_rows = torch.tensor(scores)
    n_users, n_items = score_rows.shape
    excluded_mask = (
        torch.tensor(excluded, dtype=torch.bool)
        if excluded
        else torch.zeros(n_users, n_items, dtype=torch.bool)
    )
    return ScoredBatch(
        users=torch.arange(n_users),
        scores=score_rows,
        relevant=torch.tensor(relevant, dtype=torch.bool),
        excluded=excluded_mask,
        lists=ranked if ranked is not None else lists([[-1]] * n_users, n_items),
        ratings=ratings,
    )


def per_user(metric: Metric, ranked: RankedLists, context: dict[str, Any] | None = None) -> list[float]:
    return metric.compute(ranked, context or {}).tolist()


# -- accuracy ------------------------------------------------------------------------------------------------


def test_auc_counts_correctly_ordered_pairs_with_ties_as_half() -> None:
    inf = float("-inf")
    batch = scored(
        # Item 4 is an excluded history item (-inf), so it is no candidate.
        scores=[[0.9, 0.5, 0.5, 0.1, inf]] * 3 + [[0.9, 0.5, inf, inf, inf]],
        relevant=[[0, 1, 0, 0, 0], [1, 1, 0, 0, 0], [1, 0, 0, 1, 0], [1, 1, 0, 0, 0]],
    )
    # User 0: relevant item 1 (0.5) against 0 (0.9) wrong, 2 (0.5) tie, 3 (0.1) right: (0 + 1/2 + 1) / 3.
    # User 1: relevant 0 and 1 against 2 and 3: item 0 beats both (2), item 1 ties 2 and beats 3 (1.5): 3.5/4.
    # User 2: relevant 0 and 3 against 1 and 2: item 0 beats both (2), item 3 beats none (0): 2/4.
    # User 3: every candidate is relevant, so there are no pairs: not judged.
    values = AUC().compute_batch(batch, {}).tolist()
    assert values[:3] == pytest.approx([0.5, 0.875, 0.5])
    assert math.isnan(values[3])


def test_auc_matches_pairwise_counting_on_random_scores() -> None:
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (6, 12), generator=generator).float()  # many ties
    relevant = torch.rand(6, 12, generator=generator) < 0.3
    relevant[:, 0] = True
    excluded = (torch.rand(6, 12, generator=generator) < 0.2) & ~relevant
    masked = scores.masked_fill(excluded, float("-inf"))
    batch = ScoredBatch(torch.arange(6), masked, relevant, excluded, lists([[-1]] * 6, 12))
    expected = []
    for row in range(6):
        positive = scores[row][relevant[row]]
        negative = scores[row][~relevant[row] & ~excluded[row]]
        wins = (positive[:, None] > negative[None, :]).double() + 0.5 * (
            positive[:, None] == negative[None, :]
        ).double()
        expected.append(float(wins.mean()))
    assert AUC().compute_batch(batch, {}).tolist() == pytest.approx(expected)


def test_rmse_and_mae_on_rated_test_pairs() -> None:
    # User 0 rated item 0 as 4 and item 1 as 4, predicted 3 and 4: errors -1, 0.
    # User 1 rated item 1 as 3, predicted 5: error 2. User 2 has no rated test interaction: not judged.
    pairs = RatedPairs(
        rows=torch.tensor([0, 0, 1]), items=torch.tensor([0, 1, 1]), ratings=torch.tensor([4.0, 4.0, 3.0])
    )
    batch = scored([[3.0, 4.0], [2.0, 5.0], [1.0, 1.0]], [[1, 1], [0, 1], [1, 0]], ratings=pairs)
    rmse = RMSE().compute_batch(batch, {}).tolist()
    mae = MAE().compute_batch(batch, {}).tolist()
    assert rmse[:2] == pytest.approx([math.sqrt(0.5), 2.0])  # sqrt((1 + 0) / 2), sqrt(4 / 1)
    assert mae[:2] == pytest.approx([0.5, 2.0])  # (1 + 0) / 2, 2 / 1
    assert math.isnan(rmse[2]) and math.isnan(mae[2])


def test_score_row_metrics_cannot_be_computed_from_lists_alone() -> None:
    with pytest.raises(CineSyncError, match="needs every item's score"):
        AUC().compute(lists([[0]], 2), {})


# -- diversity and novelty -----------------------------------------------------------------------------------


@pytest.fixture
def exposure_lists() -> RankedLists:
    # Item exposure over 4 items: item 0 twice, items 1 and 2 once, item 3 never; the last list is empty.
    return lists([[0, 1], [0, 2], [-1, -1]], n_items=4)


def test_entropy(exposure_lists: RankedLists) -> None:
    # Shares 2/4, 1/4, 1/4, 0: H = 1/2·ln 2 + 2·1/4·ln 4 = 1.5 ln 2; normalised by ln 4 = 2 ln 2: 0.75.
    assert float(Entropy(k=2).compute(exposure_lists, {})) == pytest.approx(0.75)
    assert float(Entropy(k=2, normalised=False).compute(exposure_lists, {})) == pytest.approx(
        1.5 * math.log(2)
    )
    # k=1 shows item 0 twice and nothing else: no uncertainty.
    assert float(Entropy(k=1).compute(exposure_lists, {})) == pytest.approx(0.0)
    assert Entropy.per_user is False


def test_gini(exposure_lists: RankedLists) -> None:
    # Sorted shares 0, 1/4, 1/4, 1/2 with weights 2j - n - 1 = -3, -1, 1, 3: (0 - 1/4 + 1/4 + 3/2) / (4 - 1).
    assert float(Gini(k=2).compute(exposure_lists, {})) == pytest.approx(0.5)
    # All exposure on item 0 at k=1: the maximum, (3 · 1) / 3.
    assert float(Gini(k=1).compute(exposure_lists, {})) == pytest.approx(1.0)
    # Every item shown once: perfectly even.
    assert float(Gini(k=2).compute(lists([[0, 1], [2, 3]], 4), {})) == pytest.approx(0.0)
    assert Gini.higher_is_better is False


GENRES = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])


def test_ild_on_genres() -> None:
    # Items 0 {A}, 1 {B}, 2 {A, B}: cos(0,1) = 0, cos(0,2) = cos(1,2) = 1/√2.
    # List [0, 1, 2]: mean distance (1 + 2 (1 - 1/√2)) / 3. List [0, 3]: item 3 has no genres, distance 1.
    # Lists [2, -1, -1] (one item) and [-1, -1, -1] (none) have no pairs: not judged.
    ranked = lists([[0, 1, 2], [0, 3, -1], [2, -1, -1], [-1, -1, -1]], n_items=4)
    values = per_user(ILD(k=3), ranked, {"item_genres": GENRES})
    assert values[:2] == pytest.approx([(1 + 2 * (1 - 1 / math.sqrt(2))) / 3, 1.0])
    assert math.isnan(values[2]) and math.isnan(values[3])
    # At k=2 the first list is [0, 1]: orthogonal genres, distance 1.
    assert per_user(ILD(k=2), ranked, {"item_genres": GENRES})[0] == pytest.approx(1.0)


def test_ild_reads_the_configured_feature_source() -> None:
    assert ILD().needs == {"item_genres"}
    assert ILD(features="embeddings").needs == {"item_embeddings"}
    assert ILD(features="item_features").needs == {"item_features"}
    embeddings = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    # Opposite embeddings: cosine -1, distance 2.
    assert per_user(ILD(k=2, features="embeddings"), lists([[0, 1]], 3), {"item_embeddings": embeddings}) == [
        2.0
    ]
    with pytest.raises(CineSyncError, match="must be an \\(n_items, d\\) matrix"):
        ILD(k=2, features="embeddings").compute(lists([[0, 1]], 3), {"item_embeddings": embeddings[:2]})


def test_novelty() -> None:
    # 4 training users; item users 4, 2, 1, 0 give self-information 0, 1, 2 and (0 counted as 1) 2 bits.
    context = {"item_users": torch.tensor([4, 2, 1, 0]), "n_users": 4}
    values = per_user(Novelty(k=2), lists([[0, 1], [2, 3], [1, -1], [-1, -1]], 4), context)
    assert values[:3] == pytest.approx([0.5, 2.0, 1.0])  # (0 + 1) / 2, (2 + 2) / 2, 1 / 1
    assert math.isnan(values[3])


def test_serendipity_against_a_popularity_baseline_without_seen_items() -> None:
    # Popularity order 0, 1, 2, 3, 4; baseline of N=2 items the user has not seen.
    # User 0 has seen item 0: baseline {1, 2}; top 3 = [1, 3, 4] with hits on 1 and 3: only 3 is unexpected.
    # User 1 has seen nothing: baseline {0, 1}; top 3 = [2, pad, pad] with a hit on 2: unexpected.
    ranked = lists([[1, 3, 4], [2, -1, -1]], 5, hits=[[1, 1, 0], [1, 0, 0]])
    batch = scored(
        [[0.0] * 5] * 2,
        relevant=[[0, 1, 0, 1, 0], [0, 0, 1, 0, 0]],
        excluded=[[1, 0, 0, 0, 0], [0] * 5],
        ranked=ranked,
    )
    context = {"item_counts": torch.tensor([10, 8, 6, 4, 2])}
    assert Serendipity(k=3, baseline_top=2).compute_batch(batch, context).tolist() == pytest.approx(
        [1 / 3, 1 / 3]
    )
    # With a baseline of every item, nothing is unexpected.
    assert Serendipity(k=3, baseline_top=5).compute_batch(batch, context).tolist() == [0.0, 0.0]


# -- popularity bias and exposure parity ---------------------------------------------------------------------

COUNTS = {"item_counts": torch.tensor([10, 8, 6, 4, 2])}


def test_arp() -> None:
    # Mean training count of the listed items: (10 + 2) / 2, 8 / 1; an empty list is not judged.
    values = per_user(ARP(k=2), lists([[0, 4], [1, -1], [-1, -1]], 5), COUNTS)
    assert values[:2] == pytest.approx([6.0, 8.0])
    assert math.isnan(values[2])


def test_aplt() -> None:
    # 30 interactions: the short head holding 20 % (6) is item 0 alone (10 >= 6).
    # [0, 4]: one of two in the tail; [1, 2]: both in the tail.
    ranked = lists([[0, 4], [1, 2]], 5)
    assert per_user(APLT(k=2), ranked, COUNTS) == pytest.approx([0.5, 1.0])
    # With half the interactions (15) in the head, the head is items 0 and 1 (10 < 15, 10 + 8 >= 15).
    assert per_user(APLT(k=2, head_share=0.5), ranked, COUNTS) == pytest.approx([0.5, 0.5])


def test_exposure_parity_on_a_scalar_attribute() -> None:
    catalog = pd.DataFrame({"type": ["movie", "movie", "tv", "tv"]})
    # Exposure counts 2, 1, 1, 0: movies get 3/4 of exposure for 2/4 of the catalogue, tv 1/4 for 2/4.
    value = ExposureParity(k=2).compute(lists([[0, 1], [0, 2]], 4), {"catalog": catalog})
    assert float(value) == pytest.approx(0.25)


def test_exposure_parity_splits_list_valued_attributes() -> None:
    catalog = pd.DataFrame({"genres": [["A"], ["A", "B"], ["B"], []]})
    # Groups A (item 0, half of item 1), B (half of 1, item 2), none (item 3): catalogue shares 1.5/4, 1.5/4, 1/4.
    # Exposure counts 2, 1, 0, 0 (total 3): A (2 + 0.5)/3, B 0.5/3, none 0. Gaps 11/24, 5/24, 1/4.
    value = ExposureParity(k=2, attribute="genres").compute(lists([[0, 1], [0, -1]], 4), {"catalog": catalog})
    assert float(value) == pytest.approx(11 / 24)
    with pytest.raises(CineSyncError, match="no column 'provider'"):
        ExposureParity(attribute="provider").compute(lists([[0]], 4), {"catalog": catalog})


def test_k_beyond_the_list_length() -> None:
    # The whole catalogue of 3 items is ranked; k=10 judges it with 7 empty positions.
    ranked = lists([[2, 0, 1]], 3)
    counts = {"item_counts": torch.tensor([3, 2, 1])}
    assert per_user(ARP(k=10), ranked, counts) == pytest.approx([2.0])
    assert float(Gini(k=10).compute(ranked, {})) == pytest.approx(0.0)
    assert float(Entropy(k=10).compute(ranked, {})) == pytest.approx(1.0)


# -- business metrics ----------------------------------------------------------------------------------------


@pytest.fixture
def outcome_lists() -> RankedLists:
    # Top 2: user 0 [0, 1], user 1 [2, pad], user 2 [3, 4].
    return lists([[0, 1], [2, -1], [3, 4]], n_items=5)


@pytest.fixture
def outcomes() -> pd.DataFrame:
    rows = [
        # user, item, timestamp, clicked, watch_seconds, completed
        (0, 0, 100, True, 600.0, False),  # recommended, clicked: user 0's first recommended click
        (0, 1, 100 + 8 * DAY, False, 0.0, False),  # recommended, not clicked, 8 days later
        (0, 2, 100 + 2 * DAY, True, 1000.0, True),  # not recommended; an event 2 days after the click
        (1, 2, 50, True, 500.0, True),  # recommended, clicked, completed; user 1 never returns
        (1, 3, 10, False, 0.0, False),  # not recommended, and before the click
        (2, 0, 70, True, 90.0, False),  # not recommended: user 2 has no logged recommended item
    ]
    return pd.DataFrame(rows, columns=["user", "item", "timestamp", "clicked", "watch_seconds", "completed"])


def test_ctr(outcome_lists: RankedLists, outcomes: pd.DataFrame) -> None:
    # User 0: recommended rows items 0 (clicked) and 1 (not): 1/2. User 1: item 2 clicked: 1/1. User 2: none.
    values = per_user(CTR(k=2), outcome_lists, {"outcomes": outcomes})
    assert values[:2] == pytest.approx([0.5, 1.0])
    assert math.isnan(values[2])
    # At k=1 user 0's item 1 is no longer recommended: 1/1.
    assert per_user(CTR(k=1), outcome_lists, {"outcomes": outcomes})[0] == pytest.approx(1.0)


def test_watch_time(outcome_lists: RankedLists, outcomes: pd.DataFrame) -> None:
    # User 0: (600 + 0) / 2 impressions; user 1: 500 / 1.
    values = per_user(WatchTime(k=2), outcome_lists, {"outcomes": outcomes})
    assert values[:2] == pytest.approx([300.0, 500.0])
    assert math.isnan(values[2])


def test_completion_rate(outcome_lists: RankedLists, outcomes: pd.DataFrame) -> None:
    # Completions per recommended click: user 0 clicked item 0 without completing (0/1); user 1 1/1.
    values = per_user(CompletionRate(k=2), outcome_lists, {"outcomes": outcomes})
    assert values[:2] == pytest.approx([0.0, 1.0])
    assert math.isnan(values[2])


def test_retention(outcome_lists: RankedLists, outcomes: pd.DataFrame) -> None:
    # User 0's first recommended click is at t=100; another event 2 days later is within 7 days but not 1.
    # User 1 clicked at t=50 and has no later event (the one at t=10 came before). User 2 never clicked one.
    week = per_user(Retention(k=2), outcome_lists, {"outcomes": outcomes})
    assert week[:2] == [1.0, 0.0]
    assert math.isnan(week[2])
    assert per_user(Retention(k=2, days=1), outcome_lists, {"outcomes": outcomes})[:2] == [0.0, 0.0]
    # The not-clicked event 8 days later counts with a 9-day window, as would the 2-day one.
    assert per_user(Retention(k=2, days=9), outcome_lists, {"outcomes": outcomes})[:2] == [1.0, 0.0]


# -- through the evaluator -----------------------------------------------------------------------------------


def split(rows: list[tuple[str, str, str]], catalog: pd.DataFrame | None = None) -> tuple[Dataset, Dataset]:
    frame = pd.DataFrame(rows, columns=["user", "item", "part"])
    full = build_dataset("tiny", frame[["user", "item"]], catalog)
    is_test = (frame["part"] == "test").to_numpy()
    return (
        full.with_interactions(full.interactions[~is_test], name="train"),
        full.with_interactions(full.interactions[is_test], name="test"),
    )


# Users a, b, c; items i0-i3. Training: a {i0}, b {i1}, c {i2}; test: a {i1}, b {i0, i3}, c {i3}.
ROWS = [
    ("a", "i0", "train"),
    ("b", "i1", "train"),
    ("c", "i2", "train"),
    ("a", "i1", "test"),
    ("b", "i0", "test"),
    ("b", "i3", "test"),
    ("c", "i3", "test"),
]
SCORES = [[0.0, 0.4, 0.3, 0.2], [0.1, 0.9, 0.5, 0.2], [0.3, 0.2, 0.9, 0.1]]


def fitted(train: Dataset, matrix: list[list[float]]) -> FixedScores:
    model = FixedScores()
    model.matrix = torch.tensor(matrix)
    return model.fit(train)


def test_auc_through_the_evaluator_in_batches() -> None:
    train, test = split(ROWS)
    model = fitted(train, SCORES)
    # a: candidates i1 (0.4, relevant), i2 (0.3), i3 (0.2): 2/2. b: i0 (0.1) and i3 (0.2) relevant, i2 (0.5) not:
    # 0/2. c: i3 (0.1) relevant against i0 (0.3), i1 (0.2): 0/2.
    for batch_size in (1, 2, 1024):
        result = evaluate(model, test, metrics=["auc"], batch_size=batch_size)
        np.testing.assert_allclose(result.per_user["auc"], [1.0, 0.0, 0.0])
    assert result.metrics["auc"] == pytest.approx(1 / 3)


def test_unjudged_users_are_left_out_of_the_mean() -> None:
    train, test = split(ROWS)
    model = fitted(train, SCORES)
    # Top 1: a i1, b i2, c i0. Only a's and b's recommendations were logged: c is not judged.
    log = pd.DataFrame(
        {
            "user": [0, 1],
            "item": [1, 2],
            "timestamp": [10, 20],
            "clicked": [True, False],
            "watch_seconds": [60.0, 0.0],
            "completed": [False, False],
            "user_id": ["a", "b"],
            "item_id": ["i1", "i2"],
        }
    )
    result = evaluate(model, test, metrics=["ctr@1"], context={"outcomes": log})
    assert result.metrics["ctr@1"] == pytest.approx(0.5)  # (1 + 0) / 2 judged users
    assert result.n_judged["ctr@1"] == 2
    assert np.isnan(result.per_user["ctr@1"][2])
    # A metric that judges nobody reports NaN.
    nobody = evaluate(model, test, metrics=["ctr@1"], context={"outcomes": log.iloc[:0]})
    assert math.isnan(nobody.metrics["ctr@1"]) and nobody.n_judged["ctr@1"] == 0


def test_an_unvalidated_outcome_log_is_refused() -> None:
    train, test = split(ROWS)
    with pytest.raises(CineSyncError, match="lacks column"):
        evaluate(
            fitted(train, SCORES), test, metrics=["ctr@1"], context={"outcomes": pd.DataFrame({"user": [0]})}
        )


def test_context_entries_are_built_only_when_needed() -> None:
    catalog = pd.DataFrame(
        {"genres": [["Drama"], ["Comedy", "Drama"], [], ["Horror"]], "budget": [1.0, 2.0, None, 4.0]},
        index=pd.Index(["i0", "i1", "i2", "i3"], name="item_id"),
    )
    train, test = split(ROWS, catalog)
    model = fitted(train, SCORES)
    users = np.array([0, 1, 2])
    plain = build_context(set(), model=model, test=test, history=None, users=users)
    assert set(plain) == {"item_counts", "n_items"}
    built = build_context(
        {"item_genres", "item_features", "n_users", "catalog"},
        model=model,
        test=test,
        history=None,
        users=users,
    )
    assert built["genre_vocabulary"] == ["Comedy", "Drama", "Horror"]
    assert built["item_genres"].tolist() == [[0, 1, 0], [1, 1, 0], [0, 0, 0], [0, 0, 1]]
    assert built["item_feature_names"] == ["budget"]
    assert built["item_features"].squeeze(1).tolist() == [1.0, 2.0, 0.0, 4.0]  # missing as 0
    assert built["n_users"] == 3 and built["item_users"].tolist() == [1, 1, 1, 0]
    assert built["catalog"] is test.catalog
    supplied = build_context(
        {"n_users"}, model=model, test=test, history=None, users=users, supplied={"n_users": 9}
    )
    assert supplied["n_users"] == 9


def test_missing_genres_are_a_data_error() -> None:
    train, test = split(ROWS)
    with pytest.raises(DataError, match="no 'genres' values"):
        evaluate(fitted(train, SCORES), test, metrics=["ild@2"])


def test_beyond_accuracy_metrics_on_a_toy_model() -> None:
    data = toy_dataset()
    frame = data.interactions
    is_test = (frame.groupby("user")["timestamp"].rank(method="first", ascending=False) == 1).to_numpy()
    train = data.with_interactions(frame[~is_test])
    test = data.with_interactions(frame[is_test])
    model = Popularity().fit(train)
    specs = ["auc", "entropy@5", "gini@5", "ild@5", "novelty@5", "serendipity@5", "arp@5", "aplt@5"]
    result = evaluate(model, test, metrics=[*specs, "exposure_parity@5"], history=train)
    assert all(np.isfinite(value) for value in result.metrics.values())
    # Everyone gets nearly the same popular items: concentrated exposure.
    assert result.metrics["gini@5"] > 0.5


# -- rating prediction ---------------------------------------------------------------------------------------


def rated(rows: list[tuple[str, str, float]]) -> Dataset:
    return build_dataset("rated", pd.DataFrame(rows, columns=["user", "item", "rating"]))


def test_bias_baseline_by_hand() -> None:
    data = rated([("a", "x", 4.0), ("a", "y", 2.0), ("b", "x", 5.0)])
    model = BiasBaseline(item_l2=1.0, user_l2=1.0, iterations=1).fit(data)
    # μ = 11/3. Item biases with b_u = 0: b_x = ((4 - μ) + (5 - μ)) / (1 + 2) = 5/9, b_y = (2 - μ) / (1 + 1) = -5/6.
    # User biases: b_a = ((4 - μ - 5/9) + (2 - μ + 5/6)) / (1 + 2) = -19/54, b_b = (5 - μ - 5/9) / (1 + 1) = 7/18.
    mu = 11 / 3
    expected = [[mu - 19 / 54 + 5 / 9, mu - 19 / 54 - 5 / 6], [mu + 7 / 18 + 5 / 9, mu + 7 / 18 - 5 / 6]]
    assert model.score(torch.tensor([0, 1])).tolist() == [pytest.approx(row) for row in expected]


def test_bias_baseline_needs_ratings() -> None:
    with pytest.raises(DataError, match="explicit rating"):
        BiasBaseline().fit(build_dataset("unrated", pd.DataFrame({"user": ["a"], "item": ["x"]})))


def test_rmse_and_mae_of_the_bias_baseline() -> None:
    data = toy_dataset()
    frame = data.interactions
    is_test = (frame.groupby("user")["timestamp"].rank(method="first", ascending=False) <= 2).to_numpy()
    train, test = data.with_interactions(frame[~is_test]), data.with_interactions(frame[is_test])
    model = BiasBaseline().fit(train)
    result = evaluate(model, test, metrics=["rmse", "mae"])
    # The reference: μ + b_u + b_i from the fitted biases, errors grouped by user with pandas.
    pairs = test.interactions
    assert model.global_mean is not None and model.user_bias is not None and model.item_bias is not None
    predicted = (
        float(model.global_mean)
        + model.user_bias.numpy()[pairs["user"]]
        + model.item_bias.numpy()[pairs["item"]]
    )
    by_user = pd.Series(predicted - pairs["rating"].to_numpy(), index=pairs["user"]).groupby(level=0)
    # RMSE reports the root of the users' mean squared error; MAE the mean of their absolute errors.
    user_mse = by_user.apply(lambda e: (e**2).mean())
    assert result.metrics["rmse"] == pytest.approx(np.sqrt(user_mse.mean()), rel=1e-5)
    np.testing.assert_allclose(result.per_user["rmse"], np.sqrt(user_mse.to_numpy()), rtol=1e-5)
    assert result.metrics["mae"] == pytest.approx(by_user.apply(lambda e: e.abs().mean()).mean(), rel=1e-5)
    assert RMSE.higher_is_better is False and MAE.higher_is_better is False


def test_rmse_is_the_pooled_rmse_with_one_test_rating_per_user() -> None:
    # Per-user errors 1 and 3: RMSE sqrt((1 + 9) / 2) = sqrt(5), not the mean of roots (1 + 3) / 2 = MAE.
    assert RMSE().summarise(np.array([1.0, 3.0])) == pytest.approx(math.sqrt(5))
    assert MAE().summarise(np.array([1.0, 3.0])) == pytest.approx(2.0)


def test_rating_errors_of_a_model_without_rating_predictions_raise() -> None:
    data = toy_dataset()
    model = Popularity().fit(data)
    with pytest.raises(CineSyncError, match="Popularity only ranks items"):
        evaluate(model, data, metrics=["rmse"], history=data)


# -- registration --------------------------------------------------------------------------------------------

NEW_METRICS = {
    "auc": AUC,
    "rmse": RMSE,
    "mae": MAE,
    "entropy": Entropy,
    "gini": Gini,
    "ild": ILD,
    "novelty": Novelty,
    "serendipity": Serendipity,
    "arp": ARP,
    "aplt": APLT,
    "exposure_parity": ExposureParity,
    "ctr": CTR,
    "watch_time": WatchTime,
    "completion_rate": CompletionRate,
    "retention": Retention,
}


def test_entry_points_name_the_new_metrics() -> None:
    found = {ep.name: ep.load() for ep in entry_points(group="cinesync.metrics") if ep.name in NEW_METRICS}
    assert found == NEW_METRICS
    for name, cls in found.items():
        assert ensure_component_of_kind(cls, "metric") is None
        assert cls.metric_id == name
        assert cls.__doc__ and "Source:" in cls.__doc__


class _CatalogueScores(Metric):
    metric_id: ClassVar[str] = "catalogue_scores"
    per_user: ClassVar[bool] = False
    needs_scores: ClassVar[bool] = True

    def compute(self, lists: RankedLists, context: dict[str, Any]) -> torch.Tensor:
        return torch.tensor(0.0)


def test_score_row_metrics_must_be_per_user() -> None:
    train, test = split(ROWS)
    with pytest.raises(CineSyncError, match="must be per-user"):
        evaluate(fitted(train, SCORES), test, metrics=[_CatalogueScores()])
