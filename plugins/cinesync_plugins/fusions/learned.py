"""Learned fusion (stacking): a small network scores each (user, item) from the members' outputs and features.

Stacked generalisation (Wolpert, "Stacked Generalization", Neural Networks 1992), as feature-weighted linear
stacking made non-linear (Sill, Takács, Mackey & Lin, "Feature-Weighted Linear Stacking", 2009). For each user
and item the input is every member's normalised score and reciprocal rank, the ensemble's user features
(history length, recency, genre breadth) and item features (log popularity); a one-hidden-layer network maps it
to the fused score. It is trained on validation interactions only, to rank each user's held-out item first among
all ranked items (softmax cross-entropy), early-stopped on held-out validation users.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from cinesync.errors import NotFittedError
from cinesync.interfaces import FusionInput, FusionOutput
from cinesync.scoring import ranked_mask, ranks
from cinesync_plugins.fusions._fusion import (
    AdaptiveConfig,
    AdaptiveFusion,
    feature_moments,
    member_positions,
    member_weight_rows,
    normalised_members,
    standardise,
)


class StackingNetwork(torch.nn.Module):
    """``Linear(member features) + MLP(all features)``: the linear part starts as the plain average of the
    normalised scores, the non-linear part at zero, so training starts from a sound fusion."""

    def __init__(self, n_members: int, n_context: int, hidden: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2 * n_members, 1)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.weight[0, :n_members] = 1.0 / n_members
            self.linear.bias.zero_()
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(2 * n_members + n_context, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1)
        )
        torch.nn.init.zeros_(self.mlp[2].weight)
        torch.nn.init.zeros_(self.mlp[2].bias)

    def forward(self, member_features: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        everything = torch.cat([member_features, context], dim=-1)
        return (self.linear(member_features) + self.mlp(everything)).squeeze(-1)


class LearnedFusion(AdaptiveFusion):
    """Stacking: ``f([z_m(u, i), 1/log2(1 + rank_m(u, i))]_m, user features, item features)`` learned on validation.

    ``member_weights`` reports, for every user alike, each member's share of the absolute first-layer weights on
    its inputs (an importance, not a mixing weight). A member skipped at serving time contributes zeros (its
    average normalised score and no rank signal), as documented for ``on_member_failure = "skip"``.
    """

    class Config(AdaptiveConfig):
        batch_users: int = Field(64, gt=0, description="Users per training step (each brings all its items).")

    config: Config

    def __init__(self, config: Any = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.stacker: StackingNetwork | None = None

    def _inputs(self, inputs: FusionInput, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n_users, n_items = inputs.scores[0].shape
        ranked = ranked_mask(inputs.excluded, None, inputs.scores[0].shape)
        stacked = normalised_members(inputs, self.config.normalisation)
        reciprocal = torch.stack(
            [1.0 / torch.log2(1.0 + ranks(scores, ranked).float()) for scores in inputs.scores], dim=1
        )
        n_fitted = len(self.members) or len(inputs.members)
        member_features = torch.zeros(n_users, n_items, 2 * n_fitted)
        member_features[:, :, positions] = stacked.transpose(1, 2)
        member_features[:, :, n_fitted + positions] = reciprocal.transpose(1, 2)
        parts = []
        if inputs.user_features is not None:
            parts.append(inputs.user_features.float()[:, None, :].expand(-1, n_items, -1))
        if inputs.item_features is not None:
            parts.append(inputs.item_features.float()[None, :, :].expand(n_users, -1, -1))
        context = torch.cat(parts, dim=2) if parts else torch.zeros(n_users, n_items, 0)
        return member_features, context

    def fit(self, inputs: FusionInput, relevant: torch.Tensor) -> LearnedFusion:
        self.members = list(inputs.members)
        torch.manual_seed(self.config.seed)
        member_features, context = self._inputs(inputs, torch.arange(len(inputs.members)))
        flat = context.reshape(-1, context.shape[2])
        self.feature_mean, self.feature_std = (
            feature_moments(flat) if flat.shape[1] else (torch.zeros(0), torch.ones(0))
        )
        context = standardise(context, self.feature_mean, self.feature_std)
        stacker = StackingNetwork(len(inputs.members), context.shape[2], self.config.hidden)
        ranked = ranked_mask(inputs.excluded, relevant, relevant.shape)
        self.fit_info = self.train_listwise(
            stacker,
            lambda users: stacker(member_features[users], context[users]),
            relevant,
            ranked,
            batch_size=self.config.batch_users,
        )
        self.stacker = stacker
        return self

    def fuse(self, inputs: FusionInput) -> FusionOutput:
        if self.stacker is None or self.feature_mean is None or self.feature_std is None:
            raise NotFittedError("the learned fusion is not fitted: fit it on validation data first")
        positions = member_positions(self.members, inputs.members, "learned")
        member_features, context = self._inputs(inputs, positions)
        with torch.no_grad():
            fused = self.stacker(member_features, standardise(context, self.feature_mean, self.feature_std))
            first = self.stacker.mlp[0].weight.abs().sum(0)[: 2 * len(self.members)]
            first = first + self.stacker.linear.weight.abs()[0]
            n = len(self.members)
            importance = (first[:n] + first[n:])[positions]
        return FusionOutput(scores=fused, member_weights=member_weight_rows(importance, len(inputs.users)))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        if self.stacker is None or self.feature_mean is None or self.feature_std is None:
            return {}
        return {
            **{f"stacker.{k}": v.detach().contiguous() for k, v in self.stacker.state_dict().items()},
            "feature_mean": self.feature_mean.contiguous(),
            "feature_std": self.feature_std.contiguous(),
        }

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if not tensors:
            return
        state = {k.removeprefix("stacker."): v for k, v in tensors.items() if k.startswith("stacker.")}
        hidden, n_inputs = state["mlp.0.weight"].shape
        n_members = state["linear.weight"].shape[1] // 2
        stacker = StackingNetwork(n_members, n_inputs - 2 * n_members, hidden)
        stacker.load_state_dict(state)
        stacker.eval()
        self.stacker = stacker
        self.feature_mean, self.feature_std = tensors["feature_mean"], tensors["feature_std"]
