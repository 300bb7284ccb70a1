"""Per-user score operations shared by ensembles and fusion plugins: normalisation, ranks, NDCG.

Conventions (as the evaluator's, :mod:`cinesync.evaluation.evaluator`): ``excluded`` marks each user's training
items, which are not ranked; ``relevant`` marks held-out items, which are always ranked (a relevant item that is
also excluded stays in the ranking). Per-user statistics (mean, spread, ranks) are taken over the ranked items
only, so a member that scores training items very high (EASE, ItemKNN) does not squash everything else. All of it
is batched tensor work over ``(users, items)`` matrices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch

Normalisation = Literal["none", "minmax", "zscore", "rank"]


def ranked_mask(
    excluded: torch.Tensor | None, relevant: torch.Tensor | None, shape: torch.Size
) -> torch.Tensor:
    """Boolean mask of the items that are ranked for each user: not excluded, or relevant."""
    if excluded is None:
        return torch.ones(shape, dtype=torch.bool)
    return ~excluded if relevant is None else ~excluded | relevant


def zscore_moments(scores: torch.Tensor, ranked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of each row over its ``ranked`` items, shaped ``(users, 1)``."""
    count = ranked.sum(1, keepdim=True).clamp_min(1)
    mean = torch.where(ranked, scores, 0.0).sum(1, keepdim=True) / count
    variance = torch.where(ranked, scores - mean, 0.0).square().sum(1, keepdim=True) / count
    return mean, variance.sqrt().clamp_min(1e-12)


def normalise(scores: torch.Tensor, method: Normalisation, ranked: torch.Tensor) -> torch.Tensor:
    """Each row of ``scores`` put on a common scale, with statistics over the ``ranked`` items of the row.

    Unranked items get a value no higher than the row's lowest ranked one, so they can never win by
    normalisation alone.
    """
    scores = scores.float()
    if method == "none":
        return scores
    if method == "rank":
        count = ranked.sum(1, keepdim=True).clamp_min(1)
        positions = ranks(scores, ranked).float()
        return torch.where(ranked, 1.0 - (positions - 1) / (count - 1).clamp_min(1), 0.0)
    if method == "zscore":
        mean, std = zscore_moments(scores, ranked)
        # The row minimum over every item is at most the minimum over the ranked ones: one pass, no mask.
        floor = (scores.amin(1, keepdim=True) - mean) / std
        return torch.where(ranked, (scores - mean) / std, floor)
    low = scores.masked_fill(~ranked, math.inf).amin(1, keepdim=True)
    high = scores.masked_fill(~ranked, -math.inf).amax(1, keepdim=True)
    return torch.where(ranked, (scores - low) / (high - low).clamp_min(1e-12), 0.0)


def ranks(scores: torch.Tensor, ranked: torch.Tensor) -> torch.Tensor:
    """1-based rank of every item in its row among the ``ranked`` items (unranked items rank last; ties by index)."""
    masked = scores.float().masked_fill(~ranked, -math.inf)
    order = torch.argsort(masked, dim=1, descending=True, stable=True)
    positions = torch.empty_like(order)
    positions.scatter_(1, order, torch.arange(1, scores.shape[1] + 1).expand_as(order).contiguous())
    return positions


def ndcg_at_k(
    scores: torch.Tensor, relevant: torch.Tensor, excluded: torch.Tensor | None, k: int
) -> torch.Tensor:
    """Per-user NDCG@k of ``scores`` for the ``relevant`` items (binary gains), as the evaluator computes it."""
    ranked = ranked_mask(excluded, relevant, scores.shape)
    top = torch.topk(scores.float().masked_fill(~ranked, -math.inf), min(k, scores.shape[1]), dim=1).indices
    hits = relevant.gather(1, top).float()
    discounts = 1.0 / torch.log2(torch.arange(2, top.shape[1] + 2, dtype=torch.float32))
    dcg = (hits * discounts).sum(1)
    ideal_hits = relevant.sum(1).clamp(max=top.shape[1])
    ideal = torch.cumsum(discounts, 0)[(ideal_hits - 1).clamp_min(0)] * (ideal_hits > 0)
    return torch.where(ideal > 0, dcg / ideal.clamp_min(1e-12), torch.zeros_like(dcg))


def ranks_of(scores: torch.Tensor, ranked: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """1-based rank, among each row's ``ranked`` items, of the ``items`` ``(users, n)`` of that row: one plus the
    number of ranked items scored strictly higher (ties share the better rank). Costs ``users x n x n_items``
    comparisons instead of a full sort, so it is cheap for a top-k list."""
    scores = scores.float()
    chosen = scores.gather(1, items)
    higher = (scores.masked_fill(~ranked, -math.inf)[:, None, :] > chosen[:, :, None]).sum(2)
    return higher + 1


def weighted_normalised_sum(
    member_scores: Sequence[torch.Tensor], weights: torch.Tensor, method: Normalisation, ranked: torch.Tensor
) -> torch.Tensor:
    """``Σ_m weights[:, m] · normalise(member_scores[m])``, with ``weights`` ``(users, members)`` or ``(members,)``.

    Equal to summing :func:`normalise`'s output, but for z-scores it never builds the normalised matrices: each
    member adds ``(w / σ) · s`` in one pass and the means go into a per-user offset, which matters for serving
    latency (the ensemble fuses every member's full score matrix per request).
    """
    users, n_items = member_scores[0].shape
    weights = weights.float()
    if weights.dim() == 1:
        weights = weights.expand(users, -1)
    if method != "zscore":
        fused = torch.zeros(users, n_items)
        for position, scores in enumerate(member_scores):
            fused.addcmul_(weights[:, position : position + 1], normalise(scores, method, ranked))
        return fused
    fused = torch.zeros(users, n_items)
    offset = torch.zeros(users, 1)
    floor = torch.zeros(users, 1)
    for position, scores in enumerate(member_scores):
        scores = scores.float()
        mean, std = zscore_moments(scores, ranked)
        scale = weights[:, position : position + 1] / std
        fused.addcmul_(scale, scores)
        offset += scale * mean
        floor += scale * (scores.amin(1, keepdim=True) - mean)
    return torch.where(ranked, fused - offset, floor)
