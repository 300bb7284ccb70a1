"""The ranked lists the evaluator hands to every metric."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RankedLists:
    """Top-K recommendations of every evaluated user, with what a metric needs to judge them.

    * ``users``: (U,) user indices.
    * ``items``: (U, K) item indices, best first; ``-1`` pads rows with fewer than K candidates.
    * ``hits``: (U, K) bool, ``items[u, j]`` is a held-out relevant item of user u (always False on padding).
    * ``n_relevant``: (U,) number of held-out relevant items (>= 1: users without any are not evaluated).
    * ``first_relevant_rank``: (U,) 1-based rank of the best-ranked relevant item in the *full* ranking of all
      candidates whose first K entries are ``items``: within the top K it is the position of the first hit;
      beyond it, ties with the relevant item's score count optimistically (but never ahead of the top K).
      Metrics without a cut-off, such as MRR, read it.
    * ``n_items``: size of the catalogue ranked.

    K is the largest cut-off any metric asked for, or the catalogue size when that is smaller: a metric at
    ``k > K`` is then judged on the whole ranking, as every position past K is necessarily empty.
    """

    users: torch.Tensor
    items: torch.Tensor
    hits: torch.Tensor
    n_relevant: torch.Tensor
    first_relevant_rank: torch.Tensor
    n_items: int

    @property
    def depth(self) -> int:
        return int(self.items.shape[1])

    def hits_at(self, k: int) -> torch.Tensor:
        """(U, min(k, K)) float hit flags of the top k."""
        return self.hits[:, : self._cut(k)].float()

    def items_at(self, k: int) -> torch.Tensor:
        """(U, min(k, K)) item indices of the top k, ``-1`` where a row has fewer candidates."""
        return self.items[:, : self._cut(k)]

    def _cut(self, k: int) -> int:
        if k > self.depth and self.depth < self.n_items:
            raise ValueError(f"ranked lists hold {self.depth} items per user, fewer than k={k}")
        return min(k, self.depth)


@dataclass
class RatedPairs:
    """The rated test interactions of a batch of users: ``rows`` (position in the batch), ``items``, ``ratings``.

    Every test interaction with a known rating is one entry, repeats included (each rating is an observation).
    """

    rows: torch.Tensor
    items: torch.Tensor
    ratings: torch.Tensor


@dataclass
class ScoredBatch:
    """One batch of evaluated users with their full score rows, for metrics that set ``needs_scores``.

    * ``users``: (B,) user indices.
    * ``scores``: (B, n_items) float scores as ranked: ``-inf`` where an item is excluded (a history item that
      is not relevant), the model's score everywhere else; every finite entry is a candidate.
    * ``relevant``: (B, n_items) bool, the held-out test items.
    * ``excluded``: (B, n_items) bool, the users' history items (relevant ones included, although they stay
      in the ranking).
    * ``lists``: the batch's own :class:`RankedLists` (rows of the evaluation's lists for these users).
    * ``ratings``: the batch's rated test interactions when a metric needs ``"ratings"``, else None.
    """

    users: torch.Tensor
    scores: torch.Tensor
    relevant: torch.Tensor
    excluded: torch.Tensor
    lists: RankedLists
    ratings: RatedPairs | None = None
