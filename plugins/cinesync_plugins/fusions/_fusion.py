"""Building blocks the fusion plugins share: normalised member stacks, listwise fitting, per-user weighting.

Score normalisation, ranks and validation NDCG live in :mod:`cinesync.scoring` (the ensemble core uses them too);
its conventions hold here: ``excluded`` marks training items, which are not ranked, ``relevant`` held-out items,
which always are.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Self

import torch
from pydantic import Field

from cinesync.interfaces import ComponentConfig, Fusion, FusionInput, FusionOutput
from cinesync.scoring import Normalisation, normalise, ranked_mask, weighted_normalised_sum


class NormalisedConfig(ComponentConfig):
    """Config fields every score-combining fusion has."""

    normalisation: Normalisation = Field(
        "zscore",
        description="How each member's scores are put on one scale per user before they are combined: "
        "'zscore' (minus the mean, over the standard deviation), 'minmax' (to [0, 1]), 'rank' (1 for the "
        "top ranked item down to 0), or 'none'. Statistics are over the items that are ranked.",
    )


def normalised_members(inputs: FusionInput, method: Normalisation) -> torch.Tensor:
    """The members' normalised scores stacked as ``(users, members, items)``."""
    ranked = ranked_mask(inputs.excluded, None, inputs.scores[0].shape)
    return torch.stack([normalise(scores, method, ranked) for scores in inputs.scores], dim=1)


def listwise_loss(logits: torch.Tensor, relevant: torch.Tensor, ranked: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy of the relevant items among each user's ranked items, averaged over the relevant
    items of each user and then over users: the full-ranking objective the fused score should serve."""
    log_probabilities = torch.log_softmax(logits.masked_fill(~ranked, -math.inf), dim=1)
    per_user = (log_probabilities.masked_fill(~relevant, 0.0)).sum(1) / relevant.sum(1).clamp_min(1)
    return -per_user.mean()


def fit_listwise(
    module: torch.nn.Module,
    fused_logits: Callable[[torch.Tensor], torch.Tensor],
    relevant: torch.Tensor,
    ranked: torch.Tensor,
    *,
    steps: int,
    learning_rate: float,
    weight_decay: float,
    holdout: float,
    seed: int,
    batch_size: int = 256,
) -> dict[str, float]:
    """Train ``module`` with Adam on the listwise loss of ``fused_logits(user_positions)`` for the validation users.

    A random ``holdout`` share of the users is kept aside: after each pass the module is scored on it and the
    state with the lowest held-out loss is kept (early stopping), so a fusion cannot simply memorise the
    validation users. Returns the held-out loss at the best pass and that pass's number.
    """
    generator = torch.Generator().manual_seed(seed)
    n_users = relevant.shape[0]
    order = torch.randperm(n_users, generator=generator)
    n_holdout = max(1, round(holdout * n_users)) if holdout > 0 and n_users > 1 else 0
    held, trained = order[:n_holdout], order[n_holdout:]
    optimiser = torch.optim.Adam(module.parameters(), lr=learning_rate, weight_decay=weight_decay)

    def loss_on(positions: torch.Tensor) -> torch.Tensor:
        return listwise_loss(fused_logits(positions), relevant[positions], ranked[positions])

    best_loss, best_step, best_state = math.inf, 0, copy.deepcopy(module.state_dict())
    for step in range(1, steps + 1):
        module.train()
        shuffled = trained[torch.randperm(len(trained), generator=generator)]
        for start in range(0, len(shuffled), batch_size):
            optimiser.zero_grad()
            loss_on(shuffled[start : start + batch_size]).backward()
            optimiser.step()
        module.eval()
        with torch.no_grad():
            held_loss = float(loss_on(held if n_holdout else trained))
        if held_loss < best_loss - 1e-6:
            best_loss, best_step, best_state = held_loss, step, copy.deepcopy(module.state_dict())
    module.load_state_dict(best_state)
    module.eval()
    return {"holdout_loss": best_loss, "best_pass": float(best_step)}


def standardise(features: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(features - mean) / std`` with a guard against constant features."""
    return (features.float() - mean) / std.clamp_min(1e-6)


def feature_moments(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of each column (the statistics :func:`standardise` uses)."""
    features = features.float()
    return features.mean(0), features.std(0, unbiased=False)


def member_weight_rows(weights: torch.Tensor, n_users: int) -> torch.Tensor:
    """A global weight vector repeated for ``n_users`` users, normalised to sum to 1 over its absolute values."""
    weights = weights.float().abs()
    return (weights / weights.sum().clamp_min(1e-12)).expand(n_users, -1).clone()


def member_positions(fitted: Sequence[str], given: Sequence[str], fusion: str) -> torch.Tensor:
    """Positions in ``fitted`` of the ``given`` members (an ensemble that skips a failed member passes fewer).

    Raises when a given member was not seen by ``fit``; before ``fit`` every given member is its own position.
    """
    from cinesync.errors import CineSyncError

    if not fitted:
        return torch.arange(len(given))
    unknown = [name for name in given if name not in fitted]
    if unknown:
        raise CineSyncError(f"the {fusion} fusion was fitted on members {list(fitted)}, not on {unknown}")
    return torch.tensor([list(fitted).index(name) for name in given], dtype=torch.long)


class AdaptiveConfig(NormalisedConfig):
    """Config of the fusions that learn per-user member weights on validation (attention, gated)."""

    hidden: int = Field(16, gt=0, description="Width of the hidden layer of the weighting network.")
    passes: int = Field(60, gt=0, description="Most passes over the validation users (early-stopped).")
    learning_rate: float = Field(0.01, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    holdout: float = Field(
        0.2, ge=0, lt=1, description="Share of validation users held out to early-stop the network on."
    )
    seed: int = Field(0, description="Seed of the holdout split and the initial weights.")


class WeightingNetwork(torch.nn.Module):
    """Per-user member weights ``softmax(MLP(features))`` and a learned sharpness for the fused score.

    The output layer starts at zero, so training starts from equal weights: the plain average of the
    normalised scores, a strong fusion on its own.
    """

    def __init__(self, n_features: int, n_members: int, hidden: int) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(n_features, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, n_members)
        )
        torch.nn.init.zeros_(self.layers[2].weight)
        torch.nn.init.zeros_(self.layers[2].bias)
        self.log_sharpness = torch.nn.Parameter(torch.zeros(()))

    def forward(self, features: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.layers(features)
        if present is not None:
            logits = logits.masked_fill(~present, -math.inf)
        return torch.softmax(logits, dim=1)


class AdaptiveFusion(Fusion):
    """Base of fusions that weigh the members per user: ``Σ_m w_m(u) · z_m(u, i)`` with ``w(u)`` a softmax over
    members computed by a small network from features of the user (:meth:`gate_features`).

    ``fit`` standardises the features on the validation users and trains the network to rank each user's
    held-out item first (softmax cross-entropy over the ranked items), early-stopped on held-out users.
    """

    config: AdaptiveConfig

    def __init__(self, config: Any = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.network: WeightingNetwork | None = None
        self.feature_mean: torch.Tensor | None = None
        self.feature_std: torch.Tensor | None = None
        self.fit_info: dict[str, float] = {}

    #: Whether :meth:`gate_features` reads the normalised member scores (else it gets None: serving skips them).
    gate_reads_scores: ClassVar[bool] = True

    def gate_features(self, inputs: FusionInput, stacked: torch.Tensor | None) -> torch.Tensor:
        """Features ``(users, F)`` the weights are computed from; ``stacked`` is ``(users, members, items)``
        (None when ``gate_reads_scores`` is False)."""
        raise NotImplementedError

    def fit(self, inputs: FusionInput, relevant: torch.Tensor) -> Self:
        super().fit(inputs, relevant)
        torch.manual_seed(self.config.seed)
        stacked = normalised_members(inputs, self.config.normalisation)
        features = self.gate_features(inputs, stacked)
        self.feature_mean, self.feature_std = feature_moments(features)
        features = standardise(features, self.feature_mean, self.feature_std)
        network = WeightingNetwork(features.shape[1], len(inputs.members), self.config.hidden)
        ranked = ranked_mask(inputs.excluded, relevant, relevant.shape)

        def logits(positions: torch.Tensor) -> torch.Tensor:
            weights = network(features[positions])
            return torch.einsum("um,umi->ui", weights, stacked[positions]) * network.log_sharpness.exp()

        self.fit_info = self.train_listwise(network, logits, relevant, ranked)
        self.network = network
        return self

    def train_listwise(
        self,
        module: torch.nn.Module,
        logits: Callable[[torch.Tensor], torch.Tensor],
        relevant: torch.Tensor,
        ranked: torch.Tensor,
        batch_size: int = 256,
    ) -> dict[str, float]:
        """:func:`fit_listwise` with this fusion's passes, optimiser settings, holdout and seed."""
        return fit_listwise(
            module,
            logits,
            relevant,
            ranked,
            steps=self.config.passes,
            learning_rate=self.config.learning_rate,
            weight_decay=self.config.weight_decay,
            holdout=self.config.holdout,
            seed=self.config.seed,
            batch_size=batch_size,
        )

    def fuse(self, inputs: FusionInput) -> FusionOutput:
        from cinesync.errors import NotFittedError

        if self.network is None or self.feature_mean is None or self.feature_std is None:
            raise NotFittedError(f"the {type(self).__name__} is not fitted: fit it on validation data first")
        positions = member_positions(self.members, inputs.members, type(self).__name__)
        full: torch.Tensor | None = None
        if self.gate_reads_scores:
            stacked = normalised_members(inputs, self.config.normalisation)
            full = torch.zeros(stacked.shape[0], len(self.members), stacked.shape[2])
            full[:, positions] = stacked
        features = standardise(
            self.gate_features(_padded(inputs, self.members), full), self.feature_mean, self.feature_std
        )
        present = torch.zeros(len(self.members), dtype=torch.bool)
        present[positions] = True
        with torch.no_grad():
            weights = self.network(features, present.expand(len(features), -1))[:, positions]
            ranked = ranked_mask(inputs.excluded, None, inputs.scores[0].shape)
            fused = weighted_normalised_sum(inputs.scores, weights, self.config.normalisation, ranked)
        return FusionOutput(scores=fused, member_weights=weights)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        if self.network is None or self.feature_mean is None or self.feature_std is None:
            return {}
        return {
            **{f"network.{k}": v.detach().contiguous() for k, v in self.network.state_dict().items()},
            "feature_mean": self.feature_mean.contiguous(),
            "feature_std": self.feature_std.contiguous(),
        }

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if not tensors:
            return
        state = {k.removeprefix("network."): v for k, v in tensors.items() if k.startswith("network.")}
        hidden, n_features = state["layers.0.weight"].shape
        network = WeightingNetwork(n_features, state["layers.2.weight"].shape[0], hidden)
        network.load_state_dict(state)
        network.eval()
        self.network = network
        self.feature_mean, self.feature_std = tensors["feature_mean"], tensors["feature_std"]


def _padded(inputs: FusionInput, members: Sequence[str]) -> FusionInput:
    """``inputs`` with every fitted member present: a skipped member's scores are zeros (masked out later)."""
    if list(inputs.members) == list(members):
        return inputs
    by_name = dict(zip(inputs.members, inputs.scores, strict=True))
    zeros = torch.zeros_like(inputs.scores[0])
    return FusionInput(
        scores=[by_name.get(name, zeros) for name in members],
        users=inputs.users,
        members=list(members),
        excluded=inputs.excluded,
        user_features=inputs.user_features,
        item_features=inputs.item_features,
        user_feature_names=inputs.user_feature_names,
        item_feature_names=inputs.item_feature_names,
    )
