"""The full-ranking evaluator on hand-made models and data, and against a brute-force reference."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
import torch

from cinesync.data.dataset import Dataset, build_dataset
from cinesync.errors import CineSyncError, DataError, UnknownComponentError
from cinesync.evaluation import EvaluationResult, evaluate, parse_metric
from cinesync.evaluation.ranking import RankedLists
from cinesync.interfaces import Metric
from cinesync.testing.fixed_scores import FixedScores
from cinesync_plugins.metrics.average_precision import MAP
from cinesync_plugins.metrics.coverage import Coverage
from cinesync_plugins.metrics.hit_rate import HitRate
from cinesync_plugins.metrics.mrr import MRR
from cinesync_plugins.metrics.ndcg import NDCG
from cinesync_plugins.metrics.precision import Precision
from cinesync_plugins.metrics.recall import Recall

METRICS: tuple[type[Metric], ...] = (HitRate, NDCG, MRR, Precision, Recall, MAP, Coverage)
LOG2_3 = math.log2(3)


class DropsAColumn(FixedScores):
    def score(
        self, users: torch.Tensor, items: torch.Tensor | None = None, context: Any = None
    ) -> torch.Tensor:
        return super().score(users)[:, :-1]


def fitted(train: Dataset, matrix: Any, cls: type[FixedScores] = FixedScores) -> FixedScores:
    model = cls()
    model.matrix = torch.as_tensor(np.asarray(matrix), dtype=torch.float32)
    model.fit(train)
    return model


def split(rows: list[tuple[Any, Any, str]]) -> tuple[Dataset, Dataset]:
    """Training and test parts, sharing id maps, of (user, item, part) rows."""
    frame = pd.DataFrame(rows, columns=["user", "item", "part"])
    full = build_dataset("tiny", frame[["user", "item"]])
    is_test = (frame["part"] == "test").to_numpy()
    interactions = full.interactions
    return (
        full.with_interactions(interactions[~is_test], name="train"),
        full.with_interactions(interactions[is_test], name="test"),
    )


# Users a-d, items 0-5 (indices equal ids). Training: a {0}, b {4, 5}, c {1}, d {2}.
# Test: a {2, 2, 3} (a duplicate), b {0, 5} (5 also seen in training), c {0}; d has none.
TINY = [
    ("a", 0, "train"),
    ("b", 4, "train"),
    ("b", 5, "train"),
    ("c", 1, "train"),
    ("d", 2, "train"),
    ("a", 2, "test"),
    ("a", 2, "test"),
    ("a", 3, "test"),
    ("b", 0, "test"),
    ("b", 5, "test"),
    ("c", 0, "test"),
]
TINY_SCORES = [
    [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],  # a: 0 excluded -> ranking 1 2 3 4 5, first relevant (2) at rank 2
    [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # b: 4 excluded, 5 kept -> ranking 5 3 2 1 0, first relevant at rank 1
    [0.3, 0.9, 0.1, 0.2, 0.8, 0.7],  # c: 1 excluded -> ranking 4 5 0 3 2, first relevant (0) at rank 3
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # d: not evaluated
]


def test_tiny_case_by_hand() -> None:
    train, test = split(TINY)
    model = fitted(train, TINY_SCORES)
    result = evaluate(model, test, metrics=[MRR(), HitRate(k=2), NDCG(k=2), Recall(k=5), Coverage(k=1)])
    assert isinstance(result, EvaluationResult)
    # d (index 3) has no test items and is left out.
    assert result.users.tolist() == [0, 1, 2]
    assert result.n_users == 3
    # Ranks 2, 1, 3: a's training item 0 is excluded (else a's rank would be 3); b's seen-but-relevant 5 is
    # not masked (else b's rank would be 5).
    np.testing.assert_allclose(result.per_user["mrr"], [1 / 2, 1, 1 / 3])
    np.testing.assert_allclose(result.per_user["hr@2"], [1, 1, 0])
    # a: DCG = 1/log2(3) (hit at 2), IDCG over min(2 relevant, 2) = 1 + 1/log2(3).
    # b: DCG = 1 (hit at 1), same IDCG. c: no hit in the top 2, 0.
    idcg = 1 + 1 / LOG2_3
    np.testing.assert_allclose(result.per_user["ndcg@2"], [1 / LOG2_3 / idcg, 1 / idcg, 0], rtol=1e-6)
    # a's duplicate test row counts once: 2 of 2 relevant items in the top 5.
    np.testing.assert_allclose(result.per_user["recall@5"], [1, 1, 1])
    assert result.metrics["mrr"] == pytest.approx((1 / 2 + 1 + 1 / 3) / 3)
    # Top 1: a -> 1, b -> 5, c -> 4: 3 of 6 items; catalogue-level, so no per-user vector.
    assert result.metrics["coverage@1"] == pytest.approx(0.5)
    assert "coverage@1" not in result.per_user
    assert set(result.to_dict()) == {"metrics", "n_users", "seconds"}


def test_history_replaces_training_items_as_exclusions() -> None:
    train, test = split(TINY)
    model = fitted(train, TINY_SCORES)
    # History: only a has seen anything, items 0 and 1.
    history = train.with_interactions(_complete(pd.DataFrame({"user": [0, 0], "item": [0, 1]})))
    by_training = evaluate(model, test, metrics=[HitRate(k=1), Coverage(k=1)])
    by_history = evaluate(model, test, metrics=[HitRate(k=1), Coverage(k=1)], history=history)
    # Training exclusions: a -> 1 (miss), b -> 5 (hit), c -> 4 (miss); top-1 items {1, 5, 4}.
    np.testing.assert_allclose(by_training.per_user["hr@1"], [0, 1, 0])
    assert by_training.metrics["coverage@1"] == pytest.approx(3 / 6)
    # History exclusions: a -> 2 (hit), b -> 5 (hit), c -> 1 (miss: its training item is no longer excluded);
    # top-1 items {2, 5, 1}.
    np.testing.assert_allclose(by_history.per_user["hr@1"], [1, 1, 0])
    assert by_history.metrics["coverage@1"] == pytest.approx(3 / 6)


def _complete(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(timestamp=-1, rating=np.nan, weight=1.0, domain="movie")


def test_item_counts_and_user_context_reach_metrics() -> None:
    seen: dict[str, Any] = {}

    class Spy(Metric):
        metric_id: ClassVar[str] = "spy"
        needs: ClassVar[frozenset[str]] = frozenset({"item_counts", "genre"})

        def compute(self, lists: RankedLists, context: dict[str, Any]) -> torch.Tensor:
            seen.update(context)
            return torch.zeros(len(lists.users))

    train, test = split(TINY)
    model = fitted(train, TINY_SCORES)
    evaluate(model, test, metrics=[Spy()], context={"genre": "drama"})
    assert seen["item_counts"].tolist() == [1, 1, 1, 0, 1, 1]
    assert seen["n_items"] == 6
    assert seen["genre"] == "drama"
    with pytest.raises(CineSyncError, match="spy needs context genre"):
        evaluate(model, test, metrics=[Spy()])


def test_nan_scores_raise_naming_the_model() -> None:
    train, test = split(TINY)
    scores = np.array(TINY_SCORES)
    scores[1, 2] = np.nan
    with pytest.raises(CineSyncError, match=r"FixedScores\.score returned NaN"):
        evaluate(fitted(train, scores), test)


def test_wrong_shape_raises_naming_the_model() -> None:
    train, test = split(TINY)
    with pytest.raises(
        CineSyncError, match=r"DropsAColumn\.score returned shape \(3, 5\), expected \(3, 6\)"
    ):
        evaluate(fitted(train, TINY_SCORES, DropsAColumn), test)


def test_test_data_must_share_the_id_maps() -> None:
    train, _ = split(TINY)
    other = build_dataset("other", pd.DataFrame({"user": ["a"], "item": [0]}))
    with pytest.raises(DataError, match="id maps"):
        evaluate(fitted(train, TINY_SCORES), other)


def test_metric_specs_are_parsed() -> None:
    train, test = split(TINY)
    result = evaluate(fitted(train, TINY_SCORES), test, metrics=["mrr", "hr@2"], batch_size=2)
    assert set(result.metrics) == {"mrr", "hr@2"}
    assert result.metrics["mrr"] == pytest.approx((1 / 2 + 1 + 1 / 3) / 3)


def test_parse_metric() -> None:
    ndcg = parse_metric("ndcg@10")
    assert isinstance(ndcg, NDCG) and ndcg.config.k == 10
    assert parse_metric("mrr").config.k is None
    assert parse_metric("recall@20").name == "recall@20"
    assert parse_metric("hr").config.k == 10
    for bad in ("ndcg@x", "ndcg@0", "ndcg@-1", "ndcg@1.5", "ndcg@", "@5", ""):
        with pytest.raises(CineSyncError, match="bad metric"):
            parse_metric(bad)
    with pytest.raises(UnknownComponentError, match="no metric named 'nope'"):
        parse_metric("nope@3")


def reference(
    scores: np.ndarray, train: list[set[int]], test: list[set[int]], ks: tuple[int, ...]
) -> dict[str, np.ndarray | float]:
    """Metrics by definition, one user at a time, with numpy sorting."""
    n_items = scores.shape[1]
    out: dict[str, Any] = {}
    users = [u for u in range(len(test)) if test[u]]
    ranked = {}
    for u in users:
        allowed = [i for i in range(n_items) if i not in train[u] or i in test[u]]
        ranked[u] = sorted(allowed, key=lambda i: -scores[u, i])
    for k in ks:
        rows: dict[str, list[float]] = {n: [] for n in ("hr", "precision", "recall", "ndcg", "map", "mrr")}
        covered: set[int] = set()
        for u in users:
            top = ranked[u][:k]
            covered.update(top)
            rel = [1.0 if i in test[u] else 0.0 for i in top]
            n_rel = len(test[u])
            rows["hr"].append(float(any(rel)))
            rows["precision"].append(sum(rel) / k)
            rows["recall"].append(sum(rel) / n_rel)
            dcg = sum(r / math.log2(j + 2) for j, r in enumerate(rel))
            idcg = sum(1 / math.log2(j + 2) for j in range(min(n_rel, k)))
            rows["ndcg"].append(dcg / idcg)
            ap = sum(sum(rel[: j + 1]) / (j + 1) * r for j, r in enumerate(rel))
            rows["map"].append(ap / min(n_rel, k))
            first = next((j + 1 for j, r in enumerate(rel) if r), None)
            rows["mrr"].append(1 / first if first else 0.0)
        for name, column in rows.items():
            out[f"{name}@{k}"] = np.array(column)
        out[f"coverage@{k}"] = len(covered) / n_items
    first_ranks = [next(j + 1 for j, i in enumerate(ranked[u]) if i in test[u]) for u in users]
    out["mrr"] = 1 / np.array(first_ranks)
    return out


def test_matches_brute_force_reference() -> None:
    rng = np.random.default_rng(7)
    n_users, n_items = 50, 40
    rows = [(u, i, "train") for u in range(n_users) for i in range(n_items) if rng.random() < 0.15]
    rows += [(u, i, "test") for u in range(n_users) for i in range(n_items) if rng.random() < 0.08]
    # Every item indexed; user 0 has seen 35 of 40 items so its lists are padded; user 1 has no test items.
    rows += [(0, i, "train") for i in range(n_items)]
    rows = [r for r in rows if not (r[0] == 1 and r[2] == "test")] + [(0, 3, "test")]
    train, test = split(rows)
    scores = rng.standard_normal((n_users, n_items))
    model = fitted(train, scores)

    ks = (5, 10, 50)
    specs = [cls(k=k) for k in ks for cls in METRICS] + [MRR()]
    result = evaluate(model, test, metrics=specs, batch_size=16)

    train_sets = [set() for _ in range(n_users)]
    test_sets = [set() for _ in range(n_users)]
    for u, i, part in rows:
        (test_sets if part == "test" else train_sets)[u].add(i)
    expected = reference(scores, train_sets, test_sets, ks)
    assert result.users.tolist() == [u for u in range(n_users) if test_sets[u]]
    assert 1 not in result.users
    for name, value in expected.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_allclose(result.per_user[name], value, rtol=1e-5, err_msg=name)
        assert result.metrics[name] == pytest.approx(float(np.mean(value)), rel=1e-5), name


def test_ties_keep_mrr_consistent_with_the_top_k() -> None:
    # All scores tie, so which items topk picks is arbitrary; MRR@2 must still agree with HR@2 user by user,
    # and a user without a hit in the top 2 must rank its first relevant item below them.
    train, test = split(TINY)
    model = fitted(train, np.zeros((4, 6)))
    result = evaluate(model, test, metrics=[HitRate(k=2), MRR(k=2), MRR()])
    hit = result.per_user["hr@2"] == 1
    assert np.all((result.per_user["mrr@2"] > 0) == hit)
    assert np.all(result.per_user["mrr"][hit] == result.per_user["mrr@2"][hit])
    assert np.all(np.round(1 / result.per_user["mrr"][~hit]) >= 3)
