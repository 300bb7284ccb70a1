"""Fusion plugins and the score operations they share, on synthetic member scores."""

from __future__ import annotations

import math

import pytest
import torch

from cinesync import registry
from cinesync.errors import CineSyncError
from cinesync.interfaces import Fusion, FusionInput
from cinesync.scoring import ndcg_at_k, normalise, ranked_mask, ranks

FUSIONS = ["weighted", "rank_average", "learned", "attention", "gated"]


def test_zscore_statistics_come_from_ranked_items_and_excluded_items_sink() -> None:
    scores = torch.tensor([[100.0, 1.0, 2.0, 3.0]])
    ranked = torch.tensor([[False, True, True, True]])
    z = normalise(scores, "zscore", ranked)
    kept = z[ranked]
    assert kept.mean().abs() < 1e-6 and (kept.std(unbiased=False) - 1).abs() < 1e-5
    assert z[0, 0] <= kept.min()  # the excluded item cannot win by its huge raw score
    assert normalise(scores, "rank", ranked)[0, 1:].tolist() == [0.0, 0.5, 1.0]
    minmax = normalise(scores, "minmax", ranked)[0, 1:]
    assert minmax.tolist() == [0.0, 0.5, 1.0]


def test_ranks_match_a_sort_and_put_unranked_items_last() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7], [3.0, 2.0, 1.0, 0.0]])
    ranked = torch.tensor([[True, True, True, True], [False, True, True, True]])
    assert ranks(scores, ranked).tolist() == [[4, 1, 3, 2], [4, 1, 2, 3]]


def test_ndcg_at_k_by_hand() -> None:
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.1], [0.9, 0.8, 0.7, 0.1]])
    relevant = torch.tensor([[False, True, False, False], [False, False, False, True]])
    excluded = torch.tensor([[True, False, False, False], [False, False, False, False]])
    values = ndcg_at_k(scores, relevant, excluded, k=2)
    # user 0: item 0 excluded, so the relevant item 1 ranks first; user 1: relevant item ranks 4th
    assert values.tolist() == pytest.approx([1.0, 0.0])
    both = excluded | relevant  # a relevant item that is also a training item stays ranked
    assert ndcg_at_k(scores, relevant, both, k=1)[0] == pytest.approx(1.0)


def two_situations(n_users: int = 400, n_items: int = 50, seed: int = 0) -> tuple[FusionInput, torch.Tensor]:
    """Two members, each right for half of the users: member "a" knows the held-out item of users whose first
    feature is 1, member "b" of the others. Both are otherwise noise."""
    generator = torch.Generator().manual_seed(seed)
    target = torch.randint(0, n_items, (n_users,), generator=generator)
    kind = torch.arange(n_users) % 2
    relevant = torch.zeros(n_users, n_items, dtype=torch.bool)
    relevant[torch.arange(n_users), target] = True
    a = torch.randn(n_users, n_items, generator=generator)
    b = torch.randn(n_users, n_items, generator=generator)
    a[torch.arange(n_users), target] += 2.5 * (kind == 1)
    b[torch.arange(n_users), target] += 2.5 * (kind == 0)
    features = torch.stack([kind.float(), torch.randn(n_users, generator=generator), torch.zeros(n_users)], 1)
    inputs = FusionInput(
        scores=[a, b],
        users=torch.arange(n_users),
        members=["a", "b"],
        excluded=torch.zeros(n_users, n_items, dtype=torch.bool),
        user_features=features,
        item_features=torch.zeros(n_items, 1),
    )
    return inputs, relevant


def quality(scores: torch.Tensor, relevant: torch.Tensor) -> float:
    return float(ndcg_at_k(scores, relevant, None, 10).mean())


@pytest.mark.parametrize("fusion_id", ["learned", "attention", "gated"])
def test_adaptive_fusions_learn_which_member_to_trust_per_user(fusion_id: str) -> None:
    train, relevant = two_situations(seed=0)
    test, test_relevant = two_situations(seed=1)
    fusion: Fusion = registry.build("fusion", fusion_id, passes=40, seed=0)
    fusion.fit(train, relevant)

    fused = fusion.fuse(test)
    average = normalise(test.scores[0], "zscore", torch.ones_like(test_relevant)) + normalise(
        test.scores[1], "zscore", torch.ones_like(test_relevant)
    )
    best_member = max(quality(s, test_relevant) for s in test.scores)
    assert quality(fused.scores, test_relevant) > max(best_member, quality(average, test_relevant)) + 0.05
    assert fused.member_weights.shape == (len(test.users), 2)
    assert torch.allclose(fused.member_weights.sum(1), torch.ones(len(test.users)))


def test_attention_weights_follow_the_user_feature() -> None:
    inputs, relevant = two_situations()
    fusion = registry.build("fusion", "attention", passes=40).fit(inputs, relevant)
    weights = fusion.fuse(inputs).member_weights
    kind = inputs.user_features[:, 0] == 1  # type: ignore[index]
    assert weights[kind, 0].mean() > 0.7 and weights[~kind, 1].mean() > 0.7


def test_weighted_fusion_tunes_away_a_noise_member_and_keeps_fixed_weights() -> None:
    inputs, relevant = two_situations()
    noise = torch.randn_like(inputs.scores[0])
    informative = inputs.scores[0] + inputs.scores[1]
    mixed = FusionInput(scores=[informative, noise], users=inputs.users, members=["good", "noise"])
    fusion = registry.build("fusion", "weighted").fit(mixed, relevant)
    assert fusion.weights[0] > fusion.weights[1]
    assert fusion.validation_ndcg >= quality(informative, relevant) - 1e-9

    fixed = registry.build("fusion", "weighted", weights={"good": 2.0, "noise": 1.0}, normalisation="none")
    fixed.fit(mixed, relevant)
    assert torch.allclose(fixed.fuse(mixed).scores, 2 * informative + noise)
    with pytest.raises(CineSyncError, match="not members"):
        registry.build("fusion", "weighted", weights={"other": 1.0}).fit(mixed, relevant)


def test_reciprocal_rank_fusion_and_borda_by_formula() -> None:
    scores = [torch.tensor([[0.3, 0.2, 0.1]]), torch.tensor([[0.1, 0.3, 0.2]])]
    inputs = FusionInput(scores=scores, users=torch.tensor([0]), members=["x", "y"])
    rrf = registry.build("fusion", "rank_average", c=1.0).fuse(inputs).scores
    expected = torch.tensor([[1 / 2 + 1 / 4, 1 / 3 + 1 / 2, 1 / 4 + 1 / 3]]) / 2
    assert torch.allclose(rrf, expected)
    borda = registry.build("fusion", "rank_average", method="mean").fuse(inputs).scores
    assert torch.allclose(borda, -torch.tensor([[4.0, 3.0, 5.0]]) / 2)


@pytest.mark.parametrize("fusion_id", FUSIONS)
def test_fusion_state_round_trips_and_handles_a_skipped_member(fusion_id: str) -> None:
    inputs, relevant = two_situations(n_users=120)
    fusion: Fusion = registry.build(
        "fusion", fusion_id, **({"passes": 5} if fusion_id in FUSIONS[2:] else {})
    )
    fusion.fit(inputs, relevant)
    before = fusion.fuse(inputs).scores

    again: Fusion = registry.build("fusion", fusion_id, **fusion.get_params())
    again.members = list(fusion.members)
    again.load_state_tensors({k: v.clone() for k, v in fusion.state_tensors().items()})
    assert torch.allclose(again.fuse(inputs).scores, before, atol=1e-6)

    only_b = FusionInput(
        scores=[inputs.scores[1]],
        users=inputs.users,
        members=["b"],
        excluded=inputs.excluded,
        user_features=inputs.user_features,
        item_features=inputs.item_features,
    )
    partial = fusion.fuse(only_b)
    assert partial.scores.shape == before.shape and torch.isfinite(partial.scores).all()
    assert partial.member_weights.shape == (len(inputs.users), 1)
    unknown = FusionInput(scores=[inputs.scores[0]], users=inputs.users, members=["z"])
    if fusion_id != "rank_average":
        with pytest.raises(CineSyncError, match="not on"):
            fusion.fuse(unknown)


def test_every_fusion_ignores_excluded_items_in_its_statistics() -> None:
    inputs, relevant = two_situations(n_users=60)
    excluded = torch.zeros_like(relevant)
    excluded[:, 0] = True
    huge = [s.clone() for s in inputs.scores]
    for s in huge:
        s[:, 0] = 1e6  # training items scored sky-high, as EASE and ItemKNN do
    plain = FusionInput(scores=inputs.scores, users=inputs.users, members=["a", "b"], excluded=excluded)
    spiked = FusionInput(scores=huge, users=inputs.users, members=["a", "b"], excluded=excluded)
    ranked = ranked_mask(excluded, None, excluded.shape)
    for fusion_id in ("weighted", "rank_average"):
        fusion = registry.build("fusion", fusion_id).fit(plain, relevant)
        same = fusion.fuse(plain).scores[ranked]
        assert torch.allclose(fusion.fuse(spiked).scores[ranked], same, atol=1e-5)
    assert not math.isnan(float(normalise(huge[0], "zscore", ranked).sum()))


def test_ranks_of_a_top_list_match_the_full_ranks() -> None:
    from cinesync.scoring import ranks_of

    generator = torch.Generator().manual_seed(3)
    scores = torch.randn(5, 30, generator=generator)
    ranked = torch.rand(5, 30, generator=generator) > 0.2
    items = torch.topk(scores.masked_fill(~ranked, -math.inf), 4, dim=1).indices
    assert torch.equal(ranks_of(scores, ranked, items), ranks(scores, ranked).gather(1, items))


@pytest.mark.parametrize("method", ["zscore", "minmax", "rank", "none"])
def test_weighted_normalised_sum_equals_summing_normalised_scores(method: str) -> None:
    from cinesync.scoring import weighted_normalised_sum

    generator = torch.Generator().manual_seed(5)
    scores = [torch.randn(6, 40, generator=generator) * 5 + 3 for _ in range(3)]
    ranked = torch.rand(6, 40, generator=generator) > 0.3
    weights = torch.rand(6, 3, generator=generator)
    expected = sum(weights[:, m : m + 1] * normalise(scores[m], method, ranked) for m in range(3))  # type: ignore[arg-type]
    assert torch.allclose(weighted_normalised_sum(scores, weights, method, ranked), expected, atol=1e-4)
