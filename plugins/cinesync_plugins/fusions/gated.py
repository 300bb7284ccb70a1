"""Gated fusion: a mixture-of-experts gate over the members.

Jacobs, Jordan, Nowlan & Hinton, "Adaptive Mixtures of Local Experts", Neural Computation 1991: a gating network
picks, per input, a convex combination of experts. Here the experts are the ensemble's members and the gate sees
both the user (the ensemble's user features) and each expert's own output for that user: how peaked its top-10
is (mean normalised score of its top 10 items) and how much its top 10 agrees with the other members' (share of
its top-10 items in the others' top 10). An expert that is confident and agreed with gets more weight.
"""

from __future__ import annotations

import torch
from pydantic import Field

from cinesync.interfaces import FusionInput
from cinesync.scoring import ranked_mask
from cinesync_plugins.fusions._fusion import AdaptiveConfig, AdaptiveFusion


class GatedFusion(AdaptiveFusion):
    """``Σ_m g_m(u) · z_m(u, i)`` with the gate ``g(u) = softmax(MLP([user features, expert statistics]))``."""

    class Config(AdaptiveConfig):
        top: int = Field(10, gt=0, description="Size of the top lists the expert statistics are taken over.")

    config: Config

    def gate_features(self, inputs: FusionInput, stacked: torch.Tensor | None) -> torch.Tensor:
        assert stacked is not None
        ranked = ranked_mask(inputs.excluded, None, stacked[:, 0].shape)
        n_users, n_members, n_items = stacked.shape
        top = min(self.config.top, n_items)
        values, indices = torch.topk(stacked.masked_fill(~ranked[:, None, :], float("-inf")), top, dim=2)
        peak = values.masked_fill(~torch.isfinite(values), 0.0).mean(2)
        in_top = torch.zeros(n_users, n_members, n_items)
        in_top.scatter_(2, indices, 1.0)
        votes = in_top.sum(1, keepdim=True) - in_top  # how many other members have each item in their top
        agreement = (votes.gather(2, indices).sum(2) / (top * max(n_members - 1, 1))).float()
        parts = [peak, agreement]
        if inputs.user_features is not None:
            parts.insert(0, inputs.user_features.float())
        return torch.cat(parts, dim=1)
