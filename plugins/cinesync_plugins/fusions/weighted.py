"""Weighted score fusion: a weighted sum of the members' normalised scores.

The linear blend of the Netflix Prize ensembles (Töscher, Jahrer & Bell, "The BigChaos Solution to the Netflix
Grand Prize", 2009) and of Fox & Shaw's CombSUM ("Combination of Multiple Searches", TREC-2, 1994) on normalised
scores. Weights are either given or tuned on validation NDCG@k by coordinate ascent over a grid.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from cinesync.errors import CineSyncError
from cinesync.interfaces import Fusion, FusionInput, FusionOutput
from cinesync.scoring import ndcg_at_k, ranked_mask, weighted_normalised_sum
from cinesync_plugins.fusions._fusion import (
    NormalisedConfig,
    member_positions,
    member_weight_rows,
    normalised_members,
)


class WeightedFusion(Fusion):
    """Sum of ``weight_m * normalised score_m`` over members.

    With ``weights`` given (member name -> weight; unnamed members weigh 0) they are used as they are; otherwise
    ``fit`` starts from equal weights and, for ``rounds`` passes, tries each value of ``grid`` for each member in
    turn, keeping a change only when it raises validation NDCG@``k``. A member skipped at serving time drops out
    and the others' weights are renormalised.
    """

    class Config(NormalisedConfig):
        weights: dict[str, float] | None = Field(
            None, description="Fixed weight per member name; None tunes them on validation."
        )
        k: int = Field(10, gt=0, description="Cut-off of the validation NDCG the weights are tuned on.")
        grid: list[float] = Field(
            [0.0, 0.25, 0.5, 1.0, 2.0, 4.0], min_length=2, description="Weights tried for each member."
        )
        rounds: int = Field(3, ge=1, description="Passes of coordinate ascent over the members.")

    config: Config

    def __init__(self, config: Any = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.weights: torch.Tensor | None = None
        self.validation_ndcg: float | None = None

    def fit(self, inputs: FusionInput, relevant: torch.Tensor) -> WeightedFusion:
        super().fit(inputs, relevant)
        if self.config.weights is not None:
            self.weights = self._given_weights(inputs.members)
            return self
        stacked = normalised_members(inputs, self.config.normalisation)
        weights = torch.ones(len(inputs.members))

        def quality(candidate: torch.Tensor) -> float:
            fused = torch.einsum("umi,m->ui", stacked, candidate)
            return float(ndcg_at_k(fused, relevant, inputs.excluded, self.config.k).mean())

        best = quality(weights)
        for _ in range(self.config.rounds):
            improved = False
            for member in range(len(weights)):
                for value in self.config.grid:
                    candidate = weights.clone()
                    candidate[member] = value
                    if float(candidate.abs().sum()) == 0.0:
                        continue
                    score = quality(candidate)
                    if score > best + 1e-9:
                        best, weights, improved = score, candidate, True
            if not improved:
                break
        self.weights, self.validation_ndcg = weights, best
        return self

    def _given_weights(self, members: list[str]) -> torch.Tensor:
        assert self.config.weights is not None
        unknown = sorted(set(self.config.weights) - set(members))
        if unknown:
            raise CineSyncError(f"weighted fusion: weights name {unknown}, which are not members ({members})")
        return torch.tensor([float(self.config.weights.get(name, 0.0)) for name in members])

    def fuse(self, inputs: FusionInput) -> FusionOutput:
        positions = member_positions(self.members, inputs.members, "weighted")
        weights = (
            self.weights if self.weights is not None else torch.ones(len(self.members) or len(positions))
        )
        if self.config.weights is not None and self.weights is None:
            weights = self._given_weights(inputs.members)
            positions = torch.arange(len(inputs.members))
        chosen = weights[positions]
        if float(chosen.abs().sum()) == 0.0:
            raise CineSyncError(f"weighted fusion: every member given ({inputs.members}) has weight 0")
        ranked = ranked_mask(inputs.excluded, None, inputs.scores[0].shape)
        kept = [position for position, weight in enumerate(chosen.tolist()) if weight != 0.0]
        fused = weighted_normalised_sum(
            [inputs.scores[p] for p in kept], chosen[kept], self.config.normalisation, ranked
        )
        return FusionOutput(scores=fused, member_weights=member_weight_rows(chosen, len(inputs.users)))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {} if self.weights is None else {"weights": self.weights.contiguous()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.weights = tensors.get("weights")
