"""Rank fusion: reciprocal-rank fusion or the mean rank (Borda count) of the members' rankings.

Reciprocal-rank fusion: Cormack, Clarke & Büttcher, "Reciprocal Rank Fusion outperforms Condorcet and
individual Rank Learning Methods", SIGIR 2009: ``score(i) = Σ_m w_m / (c + rank_m(i))`` with ``c = 60``.
Borda count: Aslam & Montague, "Models for Metasearch", SIGIR 2001: ``score(i) = -Σ_m w_m · rank_m(i)``.
Ranks ignore score scales entirely, so no normalisation is needed; ranks are over each user's ranked items.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from cinesync.errors import CineSyncError
from cinesync.interfaces import ComponentConfig, Fusion, FusionInput, FusionOutput
from cinesync.scoring import ranked_mask, ranks
from cinesync_plugins.fusions._fusion import member_positions, member_weight_rows


class RankAverageFusion(Fusion):
    """Fuses the members' rankings, not their scores: ``reciprocal`` (RRF, the default) or ``mean`` (Borda).

    ``weights`` (member name -> weight, default 1 each) scale each member's contribution; nothing is learned.
    """

    class Config(ComponentConfig):
        method: Literal["reciprocal", "mean"] = Field(
            "reciprocal",
            description="'reciprocal': Σ w / (c + rank) (RRF); 'mean': minus the weighted mean rank.",
        )
        c: float = Field(60.0, ge=0, description="RRF's constant: larger values flatten the rank discount.")
        weights: dict[str, float] | None = Field(None, description="Weight per member name (default 1 each).")

    config: Config

    def fuse(self, inputs: FusionInput) -> FusionOutput:
        member_positions(self.members, inputs.members, "rank_average")
        given = self.config.weights or {}
        unknown = sorted(set(given) - set(self.members or inputs.members))
        if unknown:
            raise CineSyncError(f"rank_average fusion: weights name {unknown}, which are not members")
        weights = torch.tensor([float(given.get(name, 1.0)) for name in inputs.members])
        if float(weights.abs().sum()) == 0.0:
            raise CineSyncError(f"rank_average fusion: every member given ({inputs.members}) has weight 0")
        ranked = ranked_mask(inputs.excluded, None, inputs.scores[0].shape)
        fused = torch.zeros(inputs.scores[0].shape)
        for weight, scores in zip(weights.tolist(), inputs.scores, strict=True):
            positions = ranks(scores, ranked).float()
            fused += (
                weight / (self.config.c + positions)
                if self.config.method == "reciprocal"
                else -weight * positions
            )
        return FusionOutput(
            scores=fused / float(weights.abs().sum()),
            member_weights=member_weight_rows(weights, len(inputs.users)),
        )
