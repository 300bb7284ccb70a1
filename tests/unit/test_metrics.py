"""Each metric plugin against hand-computed values, and the edge cases of the ranked lists."""

from __future__ import annotations

import math
from importlib.metadata import entry_points

import pytest
import torch
from pydantic import ValidationError

from cinesync.evaluation.ranking import RankedLists
from cinesync.interfaces import Metric, ensure_component_of_kind
from cinesync_plugins.metrics.average_precision import MAP
from cinesync_plugins.metrics.coverage import Coverage
from cinesync_plugins.metrics.hit_rate import HitRate
from cinesync_plugins.metrics.mrr import MRR
from cinesync_plugins.metrics.ndcg import NDCG
from cinesync_plugins.metrics.precision import Precision
from cinesync_plugins.metrics.recall import Recall

LOG2_3 = math.log2(3)


def lists(
    items: list[list[int]], hits: list[list[int]], n_relevant: list[int], first_rank: list[int], n_items: int
) -> RankedLists:
    return RankedLists(
        users=torch.arange(len(items)),
        items=torch.tensor(items),
        hits=torch.tensor(hits, dtype=torch.bool),
        n_relevant=torch.tensor(n_relevant),
        first_relevant_rank=torch.tensor(first_rank),
        n_items=n_items,
    )


@pytest.fixture
def two_users() -> RankedLists:
    # User 0: 3 relevant items, hits at positions 1 and 3.
    # User 1: 1 relevant item, hit at position 2; only 2 candidates, so positions 3-5 are padding.
    return lists(
        items=[[0, 1, 2, 3, 4], [5, 2, -1, -1, -1]],
        hits=[[1, 0, 1, 0, 0], [0, 1, 0, 0, 0]],
        n_relevant=[3, 1],
        first_rank=[1, 2],
        n_items=6,
    )


def values(metric: Metric, ranked: RankedLists) -> list[float]:
    return metric.compute(ranked, {}).tolist()


def test_hit_rate(two_users: RankedLists) -> None:
    assert values(HitRate(k=3), two_users) == [1.0, 1.0]
    # Only position 1 counts at k=1: user 0 hits, user 1 (hit at 2) does not.
    assert values(HitRate(k=1), two_users) == [1.0, 0.0]


def test_precision(two_users: RankedLists) -> None:
    # k=3: user 0 has 2 hits / 3, user 1 has 1 hit / 3.
    assert values(Precision(k=3), two_users) == pytest.approx([2 / 3, 1 / 3])
    # k=5: padding counts as misses, so user 1 is 1 / 5, not 1 / 2.
    assert values(Precision(k=5), two_users) == pytest.approx([2 / 5, 1 / 5])


def test_recall(two_users: RankedLists) -> None:
    # hits / |relevant|: user 0 2/3, user 1 1/1; at k=1: user 0 1/3, user 1 0/1.
    assert values(Recall(k=3), two_users) == pytest.approx([2 / 3, 1.0])
    assert values(Recall(k=1), two_users) == pytest.approx([1 / 3, 0.0])


def test_recall_divides_by_all_relevant_items() -> None:
    # 4 relevant items, the top 2 both hit: 2 / 4, not 2 / min(4, 2).
    ranked = lists([[0, 1]], [[1, 1]], [4], [1], n_items=6)
    assert values(Recall(k=2), ranked) == pytest.approx([0.5])


def test_ndcg(two_users: RankedLists) -> None:
    # User 0 at k=3: DCG = 1/log2(2) + 1/log2(4) = 1.5; IDCG over min(3, 3) = 3 items = 1 + 1/log2(3) + 0.5.
    # User 1 at k=3: DCG = 1/log2(3); IDCG over min(1, 3) = 1 item = 1.
    assert values(NDCG(k=3), two_users) == pytest.approx([1.5 / (1.5 + 1 / LOG2_3), 1 / LOG2_3])


def test_ndcg_ideal_is_cut_at_k() -> None:
    # 5 relevant items, both of the top 2 hit: DCG = IDCG = 1 + 1/log2(3), so NDCG@2 = 1.
    ranked = lists([[0, 1, 2]], [[1, 1, 0]], [5], [1], n_items=6)
    assert values(NDCG(k=2), ranked) == pytest.approx([1.0])


def test_map(two_users: RankedLists) -> None:
    # User 0 at k=3: (P@1·1 + P@3·1) / min(3, 3) = (1 + 2/3) / 3 = 5/9.
    # User 1 at k=3: P@2·1 / min(1, 3) = (1/2) / 1 = 1/2.
    assert values(MAP(k=3), two_users) == pytest.approx([5 / 9, 0.5])


def test_map_normalises_by_min_of_relevant_and_k() -> None:
    # 5 relevant items, top 2 both hit: (P@1 + P@2) / min(5, 2) = (1 + 1) / 2 = 1, not 2 / 5.
    # With a miss first: P@2·1 / 2 = (1/2) / 2 = 1/4.
    ranked = lists([[0, 1], [0, 1]], [[1, 1], [0, 1]], [5, 5], [1, 2], n_items=6)
    assert values(MAP(k=2), ranked) == pytest.approx([1.0, 0.25])


def test_mrr_full_and_at_k() -> None:
    # First relevant ranks 1, 2 and 7 (7 lies beyond the K=5 lists).
    ranked = lists(
        items=[[0, 1, 2, 3, 4]] * 3,
        hits=[[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 0]],
        n_relevant=[1, 1, 1],
        first_rank=[1, 2, 7],
        n_items=20,
    )
    assert values(MRR(), ranked) == pytest.approx([1.0, 0.5, 1 / 7])
    # MRR@k = 1/rank if rank <= k else 0.
    assert values(MRR(k=1), ranked) == pytest.approx([1.0, 0.0, 0.0])
    assert values(MRR(k=5), ranked) == pytest.approx([1.0, 0.5, 0.0])
    assert values(MRR(k=7), ranked) == pytest.approx([1.0, 0.5, 1 / 7])


def test_coverage(two_users: RankedLists) -> None:
    # Top 2: {0, 1} ∪ {5, 2} = 4 of 6 items. Top 3 adds item 2 (already counted) and padding: still 4/6.
    # Top 5: {0, 1, 2, 3, 4} ∪ {5, 2} = all 6.
    coverage = Coverage(k=2).compute(two_users, {})
    assert coverage.shape == ()
    assert float(coverage) == pytest.approx(4 / 6)
    assert float(Coverage(k=3).compute(two_users, {})) == pytest.approx(4 / 6)
    assert float(Coverage(k=5).compute(two_users, {})) == pytest.approx(1.0)
    assert Coverage.per_user is False


def test_k_beyond_a_catalogue_smaller_than_k() -> None:
    # The whole catalogue of 3 items is ranked; k=10 judges it with 7 empty positions.
    ranked = lists([[2, 0, 1]], [[0, 1, 0]], [1], [2], n_items=3)
    assert values(HitRate(k=10), ranked) == [1.0]
    assert values(Precision(k=10), ranked) == pytest.approx([0.1])  # 1 hit / 10
    assert values(Recall(k=10), ranked) == pytest.approx([1.0])
    assert values(NDCG(k=10), ranked) == pytest.approx([1 / LOG2_3])  # hit at 2, IDCG over min(1, 10) = 1
    assert values(MAP(k=10), ranked) == pytest.approx([0.5])  # P@2 / min(1, 10)
    assert float(Coverage(k=10).compute(ranked, {})) == pytest.approx(1.0)


def test_k_beyond_lists_cut_short_is_an_error(two_users: RankedLists) -> None:
    # Lists of 5 over a catalogue of 6: the 6th position is unknown, not empty.
    with pytest.raises(ValueError, match="fewer than k=6"):
        NDCG(k=6).compute(two_users, {})


def test_configs() -> None:
    assert NDCG().config.k == 10
    assert MRR().config.k is None
    assert NDCG(k=20).name == "ndcg@20"
    assert MRR().name == "mrr"
    for metric in (HitRate, NDCG, MRR, Precision, Recall, MAP, Coverage):
        for bad in (0, -3):
            with pytest.raises(ValidationError):
                metric(k=bad)
        with pytest.raises(ValidationError):
            metric(cutoff=5)


def test_entry_points_name_valid_metrics() -> None:
    ours = {"hr", "ndcg", "mrr", "precision", "recall", "map", "coverage"}
    found = {ep.name: ep.load() for ep in entry_points(group="cinesync.metrics") if ep.name in ours}
    assert set(found) == ours
    for name, cls in found.items():
        assert ensure_component_of_kind(cls, "metric") is None
        assert cls.metric_id == name
