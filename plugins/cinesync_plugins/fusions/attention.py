"""Attention fusion: per-user member weights computed from who the user is.

The member weights are an attention distribution ``softmax(MLP(user features))`` over the members, in the spirit
of user-adaptive hybrid recommenders that pick the right model for each situation (Burke, "Hybrid Recommender
Systems: Survey and Experiments", UMUAI 2002, "switching/weighted" hybrids; and the learned per-user model
weighting of Ekstrand & Riedl, "When recommenders fail: predicting recommender failure for algorithm selection
and combination", RecSys 2012). The user features are the ensemble's: history length, recency of the last
interaction and genre breadth (:mod:`cinesync.ensemble`): a sequential member may deserve more weight for a user
with a long, recent history, a collaborative one for a user with a short one.
"""

from __future__ import annotations

import torch

from cinesync.errors import CineSyncError
from cinesync.interfaces import FusionInput
from cinesync_plugins.fusions._fusion import AdaptiveConfig, AdaptiveFusion


class AttentionFusion(AdaptiveFusion):
    """``Σ_m w_m(u) · z_m(u, i)`` with ``w(u) = softmax(MLP(user features of u))``, trained on validation.

    Needs the ensemble's user features (every ensemble built by :mod:`cinesync.ensemble` passes them).
    """

    class Config(AdaptiveConfig):
        pass

    config: Config
    gate_reads_scores = False

    def gate_features(self, inputs: FusionInput, stacked: torch.Tensor | None) -> torch.Tensor:
        if inputs.user_features is None:
            raise CineSyncError("the attention fusion needs user features; fuse through a cinesync Ensemble")
        return inputs.user_features.float()
