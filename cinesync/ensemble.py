"""Ensembles: members + a fusion plugin (+ a confidence calibrator) as one recommender and one artifact.

Protocol of :func:`run_ensemble` (``cinesync run ensemble.toml``), the suite protocol of :mod:`cinesync.suite`
with the fusion fitted in between:

1. Every member is fitted on *train* (iterative members early-stop on *validation*) and scores the validation
   users (their training items excluded).
2. Optional greedy forward selection of members on validation NDCG (Caruana, Niculescu-Mizil, Crew & Ksikes,
   "Ensemble Selection from Libraries of Models", ICML 2004): start empty, repeatedly add (with replacement)
   the member whose addition to the average of normalised scores most raises validation NDCG@k; members never
   added are left out of the ensemble (but still tested, so the comparison is with every listed member).
3. The fusion is fitted on those validation scores and the validation items (validation data only), then the
   confidence calibrator on the fused validation top lists.
4. Every kept member is refitted on *train + validation* (iterative ones for their best epoch count) and
   evaluated on *test*; the ensemble of the refitted members with the fitted fusion is evaluated on the same
   users as the row ``ensemble``, and compared with its best member by paired tests.

Confidence. For each recommended item the raw signals are the members' agreement (the weighted share of members
that have the item in their own top ``agreement_k``), their dispersion (standard deviation of the item's rank
across members, a rank outside a member's top ``agreement_k`` counting as ``agreement_k + 1``), its position in
the fused list and its fused z-score. A logistic regression on validation
(label: the item is the user's held-out item) turns them into a calibrated probability, so a confidence of 0.2
means about one in five such items was right on validation; ``recommend(..., min_confidence=c)`` keeps the items
at or above ``c``.

Features the fusions may condition on: per user ``log_history`` (log 1 + training interactions),
``log_days_since_last`` (log 1 + days from the user's last interaction to the data's last one; 0 without
timestamps) and ``genre_breadth`` (entropy in bits of the genres of the user's history; 0 without genres); per
item ``log_popularity`` (log 1 + training interactions).

Artifact layout (a directory, written atomically)::

    manifest.toml          "ensemble": name, fusion component and params, member names, failure policy
    members/<name>/        each member's own artifact (see cinesync.serve.artifacts)
    weights.safetensors    fusion.* (the fusion's state), calibrator.*, user_features, item_features
    metrics.json, MODEL_CARD.md, checksums.json
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import numpy as np

from cinesync.errors import ArtifactError, CineSyncError, DataError
from cinesync.interfaces import ComponentConfig, Recommendations, Recommender

_T = TypeVar("_T")

if TYPE_CHECKING:
    import torch

    from cinesync.data.dataset import Dataset
    from cinesync.interfaces import Fusion, FusionInput
    from cinesync.manifest import EnsembleManifest
    from cinesync.suite import ModelResult, SuiteResult
    from cinesync.train.trainer import TrainerConfig

log = logging.getLogger(__name__)

USER_FEATURES = ("log_history", "log_days_since_last", "genre_breadth")
ITEM_FEATURES = ("log_popularity",)
CONFIDENCE_FEATURES = ("agreement", "dispersion", "log_position", "fused_zscore")
ENSEMBLE_FORMAT_VERSION = 1


def describe_users(dataset: Dataset) -> torch.Tensor:
    """The ``(n_users, 3)`` user features of the module docstring, from ``dataset``'s interactions."""
    import torch

    frame = dataset.interactions
    users = frame["user"].to_numpy(np.int64)
    counts = np.bincount(users, minlength=dataset.n_users).astype(np.float64)
    recency = np.zeros(dataset.n_users)
    if dataset.has_timestamps:
        last = np.full(dataset.n_users, -1, dtype=np.int64)
        np.maximum.at(last, users, frame["timestamp"].to_numpy(np.int64))
        seen = last >= 0
        recency[seen] = np.log1p((int(last.max()) - last[seen]) / 86400.0)
    breadth = np.zeros(dataset.n_users)
    if "genres" in dataset.catalog and len(frame):
        from cinesync.evaluation.context import item_genres

        try:
            genres = item_genres(dataset.catalog)[0].numpy()
        except DataError:
            genres = None
        if genres is not None:
            per_user = np.zeros((dataset.n_users, genres.shape[1]))
            np.add.at(per_user, users, genres[frame["item"].to_numpy(np.int64)])
            totals = per_user.sum(1, keepdims=True)
            shares = np.divide(per_user, totals, out=np.zeros_like(per_user), where=totals > 0)
            breadth = -(shares * np.log2(np.where(shares > 0, shares, 1.0))).sum(1)
    features = np.stack([np.log1p(counts), recency, breadth], axis=1)
    return torch.from_numpy(features.astype(np.float32))


def describe_items(dataset: Dataset) -> torch.Tensor:
    """The ``(n_items, 1)`` item features of the module docstring."""
    import torch

    return torch.from_numpy(np.log1p(dataset.item_counts().astype(np.float32))[:, None])


@dataclass
class EnsembleRecommendations(Recommendations):
    """:class:`Recommendations` with, per item, its calibrated ``confidences`` and the ``members`` that made it:
    ``{member name: {"weight": the member's weight for this user, "rank": the item's rank in that member's own
    ranking, or None when it is outside the member's top agreement_k}}`` for every member with a non-zero
    weight. ``member_weights[u]`` holds user ``u``'s weight per member (in ``member_names`` order); ``members``
    is built from it on first access (serving many users need not pay for the nested dictionaries)."""

    confidences: list[list[float]] = field(default_factory=list)
    member_names: list[str] = field(default_factory=list)
    member_weights: list[list[float]] = field(default_factory=list)
    #: Per user, per kept item, per member: the item's rank in the member's top agreement_k (0 = not there).
    member_ranks: list[list[list[int]]] = field(default_factory=list)
    _members: list[list[dict[str, dict[str, float | None]]]] | None = field(default=None, repr=False)

    @property
    def members(self) -> list[list[dict[str, dict[str, float | None]]]]:
        if self._members is None:
            built = []
            for weights, ranks in zip(self.member_weights, self.member_ranks, strict=True):
                contributing = [(p, name) for p, name in enumerate(self.member_names) if weights[p] > 0]
                built.append(
                    [
                        {
                            name: {"weight": weights[p], "rank": item_ranks[p] or None}
                            for p, name in contributing
                        }
                        for item_ranks in ranks
                    ]
                )
            self._members = built
        return self._members

    def to_records(self) -> list[dict[str, Any]]:
        records = super().to_records()
        flat_confidence = [c for row in self.confidences for c in row]
        flat_members = [m for row in self.members for m in row]
        for record, confidence, members in zip(records, flat_confidence, flat_members, strict=True):
            record["confidence"] = confidence
            record["members"] = members
        return records


class ConfidenceCalibrator:
    """Logistic regression from the raw confidence signals (:data:`CONFIDENCE_FEATURES`) to the probability that
    a recommended item is the user's held-out item, fitted on validation top lists."""

    def __init__(self) -> None:
        self.weights: torch.Tensor | None = None
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    def fit(self, features: torch.Tensor, labels: torch.Tensor) -> ConfidenceCalibrator:
        import torch

        features = features.reshape(-1, features.shape[-1]).double()
        labels = labels.reshape(-1).double()
        if labels.sum() == 0 or labels.sum() == len(labels):
            raise CineSyncError(
                "cannot calibrate confidence: the fused validation top lists hold no (or only) held-out items"
            )
        self.mean, self.std = features.mean(0), features.std(0).clamp_min(1e-6)
        inputs = torch.cat([(features - self.mean) / self.std, torch.ones(len(features), 1).double()], dim=1)
        weights = torch.zeros(inputs.shape[1], dtype=torch.float64, requires_grad=True)
        optimiser = torch.optim.LBFGS([weights], max_iter=200, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimiser.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(inputs @ weights, labels)
            loss = loss + 1e-4 * (weights[:-1] ** 2).sum()
            loss.backward()
            return loss

        optimiser.step(closure)
        self.weights = weights.detach()
        return self

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        import torch

        if self.weights is None or self.mean is None or self.std is None:
            raise CineSyncError("the confidence calibrator is not fitted")
        shape = features.shape[:-1]
        flat = (features.reshape(-1, features.shape[-1]).double() - self.mean) / self.std
        return torch.sigmoid(flat @ self.weights[:-1] + self.weights[-1]).float().reshape(shape)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        assert self.weights is not None and self.mean is not None and self.std is not None
        return {"weights": self.weights, "mean": self.mean, "std": self.std}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.weights, self.mean, self.std = tensors["weights"], tensors["mean"], tensors["std"]


@dataclass
class EnsembleScores:
    """One batch scored by an ensemble: the fusion's scores and weights, the members it used and their scores."""

    scores: torch.Tensor
    member_weights: torch.Tensor
    members: list[str]
    member_scores: list[torch.Tensor]
    excluded: torch.Tensor


class Ensemble(Recommender):
    """Members (fitted recommenders sharing one dataset's id maps) combined by a fitted :class:`Fusion`.

    It is a :class:`Recommender`: ``score`` returns the fused scores, so the evaluator, the suite and
    ``recommend`` treat it like any model; :meth:`recommend` adds per-item confidences and contributing members
    (:class:`EnsembleRecommendations`) and a ``min_confidence`` filter. With ``on_member_failure = "skip"`` a
    member that raises while scoring is left out with a warning naming it; with ``"fail"`` the error propagates.
    Ensembles score the users they were trained on (not anonymous sessions). Build one with :func:`run_ensemble`
    or directly from fitted members and a fitted fusion; save it with :meth:`save`, load with :func:`load_ensemble`
    (or ``cinesync.load``).
    """

    class Config(ComponentConfig):
        on_member_failure: Literal["fail", "skip"] = "fail"
        agreement_k: int = 20

    config: Config
    supports_sessions: ClassVar[bool] = False

    def __init__(
        self,
        members: dict[str, Recommender],
        fusion: Fusion,
        *,
        user_features: torch.Tensor,
        item_features: torch.Tensor,
        calibrator: ConfidenceCalibrator | None = None,
        name: str = "ensemble",
        **params: Any,
    ) -> None:
        super().__init__(None, **params)
        if not members:
            raise CineSyncError("an ensemble needs at least one member")
        first = next(iter(members.values()))
        for member_name, member in members.items():
            member._check_fitted()
            if member.items != first.items or member.users != first.users:
                raise DataError(
                    f"ensemble member {member_name!r} was trained on other users or items than the rest"
                )
        self.members = dict(members)
        self.fusion = fusion
        self.calibrator = calibrator
        self.name = name
        self.user_features = user_features.float()
        self.item_features = item_features.float()
        self.restore_base_state(
            first.users,  # type: ignore[arg-type]
            first.items,  # type: ignore[arg-type]
            first.base_state(),
            first.item_titles,
        )

    def _fit(self, dataset: Dataset, *, validation: Dataset | None, trainer: TrainerConfig | None) -> None:
        raise CineSyncError("an Ensemble is built from fitted members: use cinesync.ensemble.run_ensemble")

    # -- scoring -------------------------------------------------------------------------------------------
    def fusion_input(self, users: torch.Tensor, member_scores: dict[str, torch.Tensor]) -> FusionInput:
        from cinesync.interfaces import FusionInput

        users = users.long()
        return FusionInput(
            scores=list(member_scores.values()),
            users=users,
            members=list(member_scores),
            excluded=self.seen_mask(users),
            user_features=self.user_features[users],
            item_features=self.item_features,
            user_feature_names=USER_FEATURES,
            item_feature_names=ITEM_FEATURES,
        )

    def score_members(self, users: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every member's scores for ``users`` (failed members left out or raised, per the failure policy)."""
        import torch

        scores: dict[str, torch.Tensor] = {}
        for member_name, member in self.members.items():
            try:
                with torch.no_grad():
                    values = member.score(users).float()
                # One reduction instead of an elementwise mask: NaN or inf anywhere makes the sum non-finite
                # (a finite overflow too, which the exact check below then clears).
                if values.shape != (len(users), self.n_items) or (
                    not torch.isfinite(values.sum()) and not torch.isfinite(values).all()
                ):
                    raise CineSyncError(
                        f"returned scores of shape {tuple(values.shape)} with non-finite values"
                        if values.shape == (len(users), self.n_items)
                        else f"returned scores of shape {tuple(values.shape)}"
                    )
            except Exception as error:
                if self.config.on_member_failure == "fail":
                    raise CineSyncError(
                        f"ensemble member {member_name!r} failed to score: {error}"
                    ) from error
                warnings.warn(
                    f"ensemble {self.name!r}: member {member_name!r} failed to score ({error}); "
                    "it is skipped for this batch",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            scores[member_name] = values
        if not scores:
            raise CineSyncError(f"ensemble {self.name!r}: every member failed to score")
        return scores

    def score_details(self, users: torch.Tensor) -> EnsembleScores:
        """The fused scores of ``users`` with the weights, members and member scores behind them."""
        member_scores = self.score_members(users)
        inputs = self.fusion_input(users, member_scores)
        output = self.fusion.fuse(inputs)
        return EnsembleScores(
            scores=output.scores.float(),
            member_weights=output.member_weights.float(),
            members=list(member_scores),
            member_scores=list(member_scores.values()),
            excluded=inputs.excluded if inputs.excluded is not None else self.seen_mask(users.long()),
        )

    def score(
        self, users: torch.Tensor, items: torch.Tensor | None = None, context: Any = None
    ) -> torch.Tensor:
        self._check_fitted()
        scores = self.score_details(users).scores
        return scores if items is None else scores[:, items]

    def confidence_features(self, details: EnsembleScores, items: torch.Tensor) -> torch.Tensor:
        """The raw confidence signals (:data:`CONFIDENCE_FEATURES`) of the fused top lists ``items``
        (``users x n``, best first): each member's weighted agreement, the members' dispersion, the position in
        the list and the fused z-score."""
        return self._confidence_and_member_ranks(details, items)[0]

    def _confidence_and_member_ranks(
        self, details: EnsembleScores, items: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Confidence features and, per member, each item's rank in that member's own top ``agreement_k``
        (0 when it is not there): ``(users, n, 4)`` and ``(users, n, members)``."""
        import torch

        from cinesync.scoring import ranked_mask, zscore_moments

        ranked = ranked_mask(details.excluded, None, details.scores.shape)
        k = min(self.config.agreement_k, self.n_items)
        agreement = torch.zeros(items.shape)
        member_ranks = []
        for position, scores in enumerate(details.member_scores):
            # Member matrices may be views of a member's own state (popularity expands one row): never written.
            top = torch.topk(scores.masked_fill(details.excluded, -math.inf), k, dim=1).indices
            matches = items[:, :, None] == top[:, None, :]
            found = matches.any(2)
            member_ranks.append(torch.where(found, matches.float().argmax(2) + 1, 0))
            agreement += details.member_weights[:, position : position + 1] * found.float()
        # Dispersion of the members' ranks of the item (outside a member's top k counts as k + 1), in [0, 0.5].
        capped = torch.stack(member_ranks, dim=2).float()
        capped = torch.where(capped > 0, capped, k + 1.0) / (k + 1.0)
        dispersion = capped.std(2, unbiased=False) if capped.shape[2] > 1 else torch.zeros(items.shape)
        position_in_list = torch.log1p(torch.arange(items.shape[1], dtype=torch.float32)).expand(items.shape)
        mean, std = zscore_moments(details.scores, ranked)
        fused_z = (details.scores.gather(1, items) - mean) / std
        features = torch.stack([agreement, dispersion, position_in_list, fused_z], dim=-1)
        return features, torch.stack(member_ranks, dim=2)

    def recommend(
        self,
        users: Sequence[Hashable] | None = None,
        k: int = 10,
        *,
        sessions: Sequence[Sequence[Hashable]] | None = None,
        exclude_seen: bool = True,
        candidates: Sequence[Hashable] | None = None,
        min_confidence: float | None = None,
        context: Any = None,
        batch_size: int = 1024,
    ) -> EnsembleRecommendations:
        """Top-``k`` items for each of ``users`` with confidences and contributing members.

        ``candidates`` restricts the ranking to those item ids; ``min_confidence`` (0..1, needs a calibrated
        ensemble) drops items below it, so a list may be shorter than ``k`` (or empty).
        """
        import torch

        self._check_fitted()
        assert self.users is not None and self.items is not None
        if sessions is not None:
            raise self._sessions_unsupported()
        if users is None:
            raise CineSyncError("recommend() needs users (ensembles score known users)")
        if k < 1:
            raise CineSyncError(f"k must be at least 1, got {k}")
        if min_confidence is not None:
            if not 0.0 <= min_confidence <= 1.0 or math.isnan(min_confidence):
                raise CineSyncError(f"min_confidence must be within [0, 1], got {min_confidence}")
            if self.calibrator is None:
                raise CineSyncError("min_confidence needs a calibrated ensemble (one built by run_ensemble)")
        user_index = torch.from_numpy(self.users.index(users))
        candidate_index = None if candidates is None else torch.from_numpy(self.items.index(candidates))
        result = EnsembleRecommendations(users=list(users), items=[], scores=[])
        for start in range(0, len(user_index), batch_size):
            batch = user_index[start : start + batch_size]
            with torch.no_grad():
                details = self.score_details(batch)
            if candidate_index is None:
                blocked = details.excluded if exclude_seen else torch.zeros_like(details.excluded)
            else:
                blocked = torch.ones_like(details.excluded)
                blocked[:, candidate_index] = False
                if exclude_seen:
                    blocked |= details.excluded
            top_scores, top_items = torch.topk(
                details.scores.masked_fill(blocked, -math.inf), min(k, self.n_items), dim=1
            )
            features, member_ranks = self._confidence_and_member_ranks(details, top_items)
            confidence = (
                self.calibrator(features)
                if self.calibrator is not None
                else torch.full(top_items.shape, math.nan)
            )
            n_allowed = (~blocked).sum(1).tolist()
            # Python lists once per batch: indexing tensors element by element is slow.
            width = top_items.shape[1]
            item_ids = self.items.lookup(top_items.reshape(-1).tolist())
            score_rows, confidence_rows = top_scores.tolist(), confidence.tolist()
            weight_rows, rank_rows = details.member_weights.tolist(), member_ranks.tolist()
            result.member_names = details.members
            for row in range(len(batch)):
                count = min(k, int(n_allowed[row]))
                columns = [
                    c
                    for c in range(count)
                    if min_confidence is None or confidence_rows[row][c] >= min_confidence
                ]
                ids = item_ids[row * width : (row + 1) * width]
                result.items.append(_columns(ids, columns, width))
                result.scores.append(_columns(score_rows[row], columns, width))
                result.confidences.append(_columns(confidence_rows[row], columns, width))
                result.member_ranks.append(_columns(rank_rows[row], columns, width))
                result.member_weights.append(weight_rows[row])
        return result

    # -- persistence ---------------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {
            **{f"fusion.{k}": v for k, v in self.fusion.state_tensors().items()},
            **(
                {}
                if self.calibrator is None
                else {f"calibrator.{k}": v for k, v in self.calibrator.state_tensors().items()}
            ),
            "user_features": self.user_features,
            "item_features": self.item_features,
        }

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        raise CineSyncError("load an ensemble with cinesync.ensemble.load_ensemble (or cinesync.load)")

    def n_parameters(self) -> int:
        fusion = sum(int(t.numel()) for t in self.fusion.state_tensors().values())
        return fusion + sum(member.n_parameters() for member in self.members.values())

    def save(self, path: str, **kwargs: Any) -> None:
        save_ensemble(self, path, **kwargs)


# ---------------------------------------------------------------------------------------------------------
# Artifacts
# ---------------------------------------------------------------------------------------------------------


def save_ensemble(
    ensemble: Ensemble,
    path: str | os.PathLike[str],
    *,
    metrics: dict[str, Any] | None = None,
    dataset: str | None = None,
    evaluation: dict[str, Any] | None = None,
    calibration: dict[str, Any] | None = None,
) -> Path:
    """Write ``ensemble`` as the directory of the module docstring, atomically, and return it."""
    import tomli_w
    from safetensors.torch import save_file

    from cinesync import __version__
    from cinesync.serve.artifacts import (
        _toml_safe,
        component_info_for,
        save_artifact,
        staged_directory,
        write_card_and_checksums,
    )

    target = Path(path)
    fusion_info = _fusion_info(type(ensemble.fusion))
    with staged_directory(target) as staging:
        for member_name, member in ensemble.members.items():
            if component_info_for(type(member)) is None:
                raise ArtifactError(f"ensemble member {member_name!r} is not a registered recommender")
            save_artifact(
                member, staging / "members" / _member_dir(member_name), name=member_name, dataset=dataset
            )
        manifest = {
            "artifact": {
                "format_version": ENSEMBLE_FORMAT_VERSION,
                "cinesync_version": __version__,
                "created": time.time(),
            },
            "ensemble": {
                "name": ensemble.name,
                "members": list(ensemble.members),
                "member_dirs": [_member_dir(n) for n in ensemble.members],
                "fusion": {
                    "component": fusion_info.id,
                    "distribution": fusion_info.distribution,
                    "component_version": fusion_info.version,
                    "params": ensemble.fusion.get_params(),
                    "members": ensemble.fusion.members,
                },
                "params": ensemble.get_params(),
                "calibrated": ensemble.calibrator is not None,
            },
            "data": {"dataset": dataset or "", "n_users": ensemble.n_users, "n_items": ensemble.n_items},
        }
        if evaluation:
            manifest["evaluation"] = evaluation
        if calibration:
            manifest["calibration"] = calibration
        (staging / "manifest.toml").write_text(tomli_w.dumps(_toml_safe(manifest)), encoding="utf-8")
        tensors = {k: v.detach().cpu().contiguous() for k, v in ensemble.state_tensors().items()}
        save_file(tensors, str(staging / "weights.safetensors"))
        card = [
            f"# {ensemble.name}",
            "",
            f"- fusion: `{fusion_info.id}` with `{json.dumps(ensemble.fusion.get_params())}`",
            f"- members: {', '.join(f'`{n}`' for n in ensemble.members)}",
            f"- trained on: {dataset or 'unknown data'} ({ensemble.n_users} users, {ensemble.n_items} items)",
        ]
        files = ("manifest.toml", "weights.safetensors", "metrics.json", "MODEL_CARD.md")
        write_card_and_checksums(staging, card, metrics or {}, files)
    return target


def _columns(values: list[_T], columns: list[int], width: int) -> list[_T]:
    """``values`` at ``columns``; the row itself, uncopied, when every one of its ``width`` columns is kept."""
    return values if len(columns) == width else [values[c] for c in columns]


def _member_dir(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or "member"


def _fusion_info(cls: type) -> Any:
    from cinesync import registry

    target = f"{cls.__module__}:{cls.__qualname__}"
    for info in registry.list_components("fusion"):
        if info.target == target:
            return info
    raise ArtifactError(f"{cls.__name__} is not registered as a cinesync.fusions entry point")


def is_ensemble_artifact(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` holds an ensemble artifact (its manifest has an ``[ensemble]`` table)."""
    from cinesync.serve.artifacts import read_manifest

    try:
        return "ensemble" in read_manifest(path)
    except ArtifactError:
        return False


def load_ensemble(path: str | os.PathLike[str]) -> Ensemble:
    """Rebuild the ensemble saved at ``path``: verify checksums, load every member artifact, the fusion's state
    and the calibrator."""
    from safetensors.torch import load_file

    from cinesync import registry
    from cinesync.serve.artifacts import load_artifact, read_manifest, verify_artifact

    root = Path(path)
    verify_artifact(root)
    manifest = read_manifest(root)
    version = manifest.get("artifact", {}).get("format_version")
    if version != ENSEMBLE_FORMAT_VERSION:
        raise ArtifactError(f"{root}: ensemble format version {version} is not supported")
    spec = manifest["ensemble"]
    members = {
        member_name: load_artifact(root / "members" / directory)
        for member_name, directory in zip(spec["members"], spec["member_dirs"], strict=True)
    }
    fusion_spec = spec["fusion"]
    try:
        fusion = registry.build("fusion", fusion_spec["component"], **fusion_spec.get("params", {}))
    except CineSyncError as error:
        raise ArtifactError(f"{root}: cannot rebuild fusion {fusion_spec['component']!r}: {error}") from error
    tensors = load_file(str(root / "weights.safetensors"))
    fusion.members = list(fusion_spec.get("members", []))
    fusion.load_state_tensors(
        {k.removeprefix("fusion."): v for k, v in tensors.items() if k.startswith("fusion.")}
    )
    calibrator = None
    if spec.get("calibrated"):
        calibrator = ConfidenceCalibrator()
        calibrator.load_state_tensors(
            {k.removeprefix("calibrator."): v for k, v in tensors.items() if k.startswith("calibrator.")}
        )
    return Ensemble(
        members,
        fusion,
        user_features=tensors["user_features"],
        item_features=tensors["item_features"],
        calibrator=calibrator,
        name=spec["name"],
        **spec.get("params", {}),
    )


# ---------------------------------------------------------------------------------------------------------
# Running an ensemble manifest
# ---------------------------------------------------------------------------------------------------------


@dataclass
class EnsembleRun:
    """What :func:`run_ensemble` produced: the suite-style results (members + ``ensemble``), the fitted ensemble,
    the member selection, the fusion's validation score, the paired comparison with the best member and the
    confidence calibration measured on test."""

    suite: SuiteResult
    ensemble: Ensemble
    selection: dict[str, int]
    validation: dict[str, float]
    comparison: dict[str, Any]
    calibration: dict[str, Any]
    skipped: list[str] = field(default_factory=list)


def _relevant_matrix(dataset: Dataset, users: np.ndarray, n_items: int) -> torch.Tensor:
    import torch

    frame = dataset.interactions
    position = {int(u): p for p, u in enumerate(users)}
    rows = torch.tensor([position[int(u)] for u in frame["user"].to_numpy(np.int64)], dtype=torch.long)
    relevant = torch.zeros(len(users), n_items, dtype=torch.bool)
    relevant[rows, torch.tensor(frame["item"].to_numpy(np.int64))] = True
    return relevant


def greedy_selection(
    stacked: torch.Tensor, relevant: torch.Tensor, excluded: torch.Tensor, rounds: int, k: int
) -> list[int]:
    """Caruana et al.'s forward selection with replacement over normalised member scores ``(users, members,
    items)``: how many times each member was added (the first addition is the best single member). Stops early
    when no addition raises validation NDCG@k."""
    import torch

    from cinesync.scoring import ndcg_at_k

    counts = [0] * stacked.shape[1]
    total = torch.zeros(stacked.shape[0], stacked.shape[2])
    best = -1.0
    for _ in range(rounds):
        trials = [
            float(ndcg_at_k(total + stacked[:, m], relevant, excluded, k).mean()) for m in range(len(counts))
        ]
        choice = int(np.argmax(trials))
        if trials[choice] <= best + 1e-9:
            break
        best = trials[choice]
        counts[choice] += 1
        total += stacked[:, choice]
    return counts


def calibration_table(confidence: np.ndarray, hits: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Reliability of ``confidence`` against binary ``hits`` (flattened top-list items): per equal-count bin the
    mean confidence and the observed hit rate, and for each decile threshold the precision of the items at or
    above it (monotone increase = the confidence orders items by their chance of being right)."""
    confidence, hits = (
        np.asarray(confidence, dtype=np.float64).ravel(),
        np.asarray(hits, dtype=np.float64).ravel(),
    )
    order = np.argsort(confidence, kind="stable")
    reliability = []
    for chunk in np.array_split(order, bins):
        if len(chunk):
            reliability.append(
                {
                    "confidence": float(confidence[chunk].mean()),
                    "hit_rate": float(hits[chunk].mean()),
                    "items": len(chunk),
                }
            )
    thresholds = np.quantile(confidence, np.linspace(0.0, 0.9, 10))
    above = [
        {
            "decile": decile,
            "threshold": float(t),
            "precision": float(hits[confidence >= t].mean()),
            "items": int((confidence >= t).sum()),
        }
        for decile, t in enumerate(thresholds)
    ]
    precisions = [row["precision"] for row in above]
    return {
        "reliability": reliability,
        "precision_above_decile": above,
        "monotonic": bool(all(b >= a for a, b in itertools.pairwise(precisions))),
        "expected_calibration_error": float(
            sum(r["items"] * abs(r["confidence"] - r["hit_rate"]) for r in reliability) / max(len(hits), 1)
        ),
    }


def run_ensemble(
    manifest: EnsembleManifest,
    *,
    source: str = "<ensemble>",
    data_dir: str | os.PathLike[str] | None = None,
    output: str | os.PathLike[str] | None = None,
    progress: bool = True,
    on_result: Any = None,
    cache: str | os.PathLike[str] | None = None,
) -> EnsembleRun:
    """Run an ensemble manifest under the protocol of the module docstring; with ``output`` write the run (as a
    suite's: results.json, per-user files, report) and the ensemble artifact under ``OUTPUT/artifacts/<name>``.

    ``on_result(result)`` is called after each member and after the ensemble (the CLI prints progress with it).
    With ``cache`` (a directory) every member fitted under this protocol is saved there as artifacts (the model
    fitted on train and the refitted one) and reused by later runs with the same member and protocol, so trying
    another fusion or selection costs no member training. The cache is keyed by the member's component, params
    and training options and by the protocol, not by the code: clear it after changing a model.
    """
    import torch

    from cinesync import registry
    from cinesync.evaluation.statistics import paired_t_test, wilcoxon_test
    from cinesync.manifest import check_components
    from cinesync.scoring import ndcg_at_k, normalise, ranked_mask
    from cinesync.suite import (
        SuiteResult,
        ValidationFit,
        describe_metrics,
        evaluate_on_test,
        evaluated_users,
        evaluation_context,
        fit_on_train,
        prepare_data,
        refit_and_test,
        save_run,
    )

    check_components(manifest, source)
    started = time.perf_counter()
    protocol = manifest.evaluation
    split = prepare_data(protocol, data_dir)
    if split.valid is None:
        raise CineSyncError(
            f"{source}: an ensemble fits its fusion on validation data; set evaluation.split.validation = true"
        )
    context = evaluation_context(protocol, split, source)
    skipped: list[str] = []

    def failed(name: str, error: Exception, stage: str) -> None:
        if manifest.on_member_failure == "fail":
            raise CineSyncError(f"{source}: ensemble member {name!r} failed to {stage}: {error}") from error
        warnings.warn(
            f"{source}: member {name!r} failed to {stage} ({error}); skipped", RuntimeWarning, stacklevel=3
        )
        skipped.append(name)

    # 1. members on train, scored on the validation users
    valid_users = np.unique(split.valid.interactions["user"].to_numpy(np.int64))
    user_tensor = torch.from_numpy(valid_users)
    fits: dict[str, ValidationFit] = {}
    valid_scores: dict[str, torch.Tensor] = {}
    specs = {spec.display_name: spec for spec in manifest.members}
    member_cache = _MemberCache(cache, protocol) if cache is not None else None
    for name, spec in specs.items():
        try:
            cached = member_cache.validation(spec) if member_cache is not None else None
            fitted = cached or fit_on_train(spec, split, protocol, progress=progress, context=context)
            if member_cache is not None and cached is None:
                member_cache.save_validation(spec, fitted)
            with torch.no_grad():
                scores = torch.cat(
                    [
                        fitted.model.score(user_tensor[s : s + protocol.batch_size]).float()
                        for s in range(0, len(user_tensor), protocol.batch_size)
                    ]
                )
            if not torch.isfinite(scores).all():
                raise CineSyncError("non-finite validation scores")
        except Exception as error:
            failed(name, error, "train")
            continue
        fits[name], valid_scores[name] = fitted, scores
        log.info("member %s: validation %s", name, fitted.metrics)
    if len(fits) < 1:
        raise CineSyncError(f"{source}: no member could be trained")
    first = next(iter(fits.values())).model
    relevant = _relevant_matrix(split.valid, valid_users, first.n_items)
    excluded = first.seen_mask(user_tensor)

    # 2. optional greedy selection
    names = list(fits)
    selection = {name: 1 for name in names}
    if manifest.selection.method == "greedy":
        ranked = ranked_mask(excluded, None, excluded.shape)
        stacked = torch.stack([normalise(valid_scores[n], "zscore", ranked) for n in names], dim=1)
        counts = greedy_selection(
            stacked, relevant, excluded, manifest.selection.rounds, manifest.selection.metric_k
        )
        selection = {name: count for name, count in zip(names, counts, strict=True)}
        names = [name for name in names if selection[name] > 0]
        if len(names) < 1:
            raise CineSyncError(f"{source}: greedy selection kept no member")

    # 3. fusion and calibrator on validation
    fusion = registry.build("fusion", manifest.fusion.component, **manifest.fusion.params)
    train_users, train_items = describe_users(split.train), describe_items(split.train)
    validation_ensemble = Ensemble(
        {name: fits[name].model for name in names},
        fusion,
        user_features=train_users,
        item_features=train_items,
        name=manifest.name,
        on_member_failure=manifest.on_member_failure,
        agreement_k=manifest.confidence.agreement_k,
    )
    inputs = validation_ensemble.fusion_input(user_tensor, {name: valid_scores[name] for name in names})
    fusion_started = time.perf_counter()
    fusion.fit(inputs, relevant)
    fusion_seconds = time.perf_counter() - fusion_started
    output_valid = fusion.fuse(inputs)
    details = EnsembleScores(
        scores=output_valid.scores.float(),
        member_weights=output_valid.member_weights.float(),
        members=names,
        member_scores=[valid_scores[name] for name in names],
        excluded=excluded,
    )
    validation = {
        "ensemble_ndcg@10": float(ndcg_at_k(details.scores, relevant, excluded, 10).mean()),
        **{
            f"{name}_ndcg@10": float(ndcg_at_k(valid_scores[name], relevant, excluded, 10).mean())
            for name in names
        },
    }
    ranked_valid = ranked_mask(excluded, relevant, excluded.shape)
    top = torch.topk(
        details.scores.masked_fill(~ranked_valid, -math.inf), manifest.confidence.calibration_k, dim=1
    ).indices
    calibrator = ConfidenceCalibrator().fit(
        validation_ensemble.confidence_features(details, top), relevant.gather(1, top)
    )

    # 4. refit members, evaluate members and the ensemble on test. Members the selection dropped are refitted
    # and tested too: the ensemble is compared with the best of every member the manifest lists.
    results: dict[str, ModelResult] = {}
    refitted: dict[str, Recommender] = {}
    for name in fits:
        try:
            refitted_model = member_cache.refit(specs[name]) if member_cache is not None else None
            model, result = refit_and_test(
                specs[name],
                split,
                protocol,
                fits[name],
                progress=progress,
                context=context,
                refitted=refitted_model,
            )
            if member_cache is not None and refitted_model is None and protocol.refit:
                member_cache.save_refit(specs[name], model, result.train_seconds - fits[name].seconds)
        except Exception as error:
            failed(name, error, "refit")
            continue
        results[name] = result
        if name in names:
            refitted[name] = model
        if on_result is not None:
            on_result(result)
    if not refitted:
        raise CineSyncError(f"{source}: every member failed to refit")
    ensemble = Ensemble(
        refitted,
        fusion,
        user_features=describe_users(split.train_valid if protocol.refit else split.train),
        item_features=describe_items(split.train_valid if protocol.refit else split.train),
        calibrator=calibrator,
        name=manifest.name,
        on_member_failure=manifest.on_member_failure,
        agreement_k=manifest.confidence.agreement_k,
    )
    ensemble_result = evaluate_on_test(
        ensemble,
        split,
        protocol,
        context,
        name="ensemble",
        component=f"ensemble:{manifest.fusion.component}",
        validation={"ndcg@10": validation["ensemble_ndcg@10"]},
        train_seconds=sum(r.train_seconds for r in results.values()) + fusion_seconds,
        fit_info={
            "fusion_seconds": fusion_seconds,
            "members": list(refitted),
            "selection": selection,
            **getattr(fusion, "fit_info", {}),
        },
    )
    results["ensemble"] = ensemble_result
    if on_result is not None:
        on_result(ensemble_result)

    # paired comparison with the best member on the first metric
    metric = next(iter(ensemble_result.metrics))
    best_member = max((n for n in results if n != "ensemble"), key=lambda n: results[n].metrics[metric])
    comparison: dict[str, Any] = {"metric": metric, "best_member": best_member}
    if metric in ensemble_result.per_user and metric in results[best_member].per_user:
        ours, theirs = ensemble_result.per_user[metric], results[best_member].per_user[metric]
        comparison.update(
            ensemble=float(np.nanmean(ours)),
            member=float(np.nanmean(theirs)),
            difference=float(np.nanmean(ours - theirs)),
            t_test_p=paired_t_test(ours, theirs),
            wilcoxon_p=wilcoxon_test(ours, theirs),
        )

    # calibration on test: the fused top-k of every test user
    calibration = _test_calibration(ensemble, split.test, protocol.batch_size, k=10)
    history = split.train_valid if protocol.refit else split.train
    users_table = evaluated_users(split.test, history)
    if not protocol.significance.baseline:
        protocol = protocol.model_copy(
            update={"significance": protocol.significance.model_copy(update={"baseline": [best_member]})}
        )
    suite = SuiteResult(
        name=manifest.name,
        protocol=protocol.model_dump(mode="json"),
        dataset={**split.train_valid.summary(), "test_users": int(split.test.interactions["user"].nunique())},
        results=results,
        seconds=time.perf_counter() - started,
        metrics=describe_metrics(protocol.metrics),
        users=users_table,
        item_counts=history.item_counts(),
    )
    run = EnsembleRun(
        suite=suite,
        ensemble=ensemble,
        selection=selection,
        validation=validation,
        comparison=comparison,
        calibration=calibration,
        skipped=skipped,
    )
    if output is not None:
        from cinesync.evaluation.report import build_report, write_report
        from cinesync.suite import write_json

        root = Path(output)
        artifact = root / "artifacts" / manifest.name
        save_ensemble(
            ensemble,
            artifact,
            metrics=ensemble_result.metrics,
            dataset=protocol.dataset.name,
            evaluation=protocol.model_dump(mode="json", exclude_none=True),
            calibration={
                "monotonic": calibration["monotonic"],
                "ece": calibration["expected_calibration_error"],
            },
        )
        ensemble_result.artifact = str(artifact)
        save_run(suite, root)
        suite.report = build_report(suite)
        suite.report["ensemble"] = ensemble_summary(run)
        write_report(suite.report, root)
        write_json(root / "ensemble.json", ensemble_summary(run))
    return run


def ensemble_summary(run: EnsembleRun) -> dict[str, Any]:
    """The ensemble-specific part of a run's report: selection, validation, comparison, calibration."""
    return {
        "members": list(run.ensemble.members),
        "skipped": run.skipped,
        "selection": run.selection,
        "validation": run.validation,
        "comparison": run.comparison,
        "calibration": run.calibration,
    }


def _test_calibration(ensemble: Ensemble, test: Dataset, batch_size: int, k: int) -> dict[str, Any]:
    import torch

    from cinesync.scoring import ranked_mask

    users = np.unique(test.interactions["user"].to_numpy(np.int64))
    relevant_all = _relevant_matrix(test, users, ensemble.n_items)
    confidences, hits = [], []
    for start in range(0, len(users), batch_size):
        batch = torch.from_numpy(users[start : start + batch_size])
        relevant = relevant_all[start : start + batch_size]
        with torch.no_grad():
            details = ensemble.score_details(batch)
            ranked = ranked_mask(details.excluded, relevant, relevant.shape)
            top = torch.topk(details.scores.masked_fill(~ranked, -math.inf), k, dim=1).indices
            assert ensemble.calibrator is not None
            confidences.append(ensemble.calibrator(ensemble.confidence_features(details, top)).numpy())
            hits.append(relevant.gather(1, top).numpy())
    return calibration_table(np.concatenate(confidences), np.concatenate(hits))


class _MemberCache:
    """Members fitted under one protocol, saved as artifacts: ``ROOT/<key>/validation`` (fitted on train) and
    ``ROOT/<key>/refit``; ``metrics.json`` of each keeps the validation metrics and the fitting seconds."""

    def __init__(self, root: str | os.PathLike[str], protocol: Any) -> None:
        self.root = Path(root)
        self.protocol = protocol.model_dump(
            mode="json", include={"dataset", "filters", "split", "refit", "metrics"}
        )

    def _key(self, spec: Any) -> Path:
        import hashlib

        payload = {
            "component": spec.component,
            "params": spec.params,
            "training": {k: v for k, v in spec.training.items() if k != "progress"},
            "protocol": self.protocol,
        }
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return self.root / f"{spec.component}-{digest}"

    def validation(self, spec: Any) -> Any:
        from cinesync.serve.artifacts import load_artifact, read_metrics
        from cinesync.suite import ValidationFit

        path = self._key(spec) / "validation"
        if not path.is_dir():
            return None
        stored = read_metrics(path)
        model = load_artifact(path)
        log.info("member %s: reusing %s", spec.display_name, path)
        return ValidationFit(
            model=model,
            metrics=stored["validation"],
            fit_info=dict(model.fit_info),
            seconds=stored["seconds"],
        )

    def save_validation(self, spec: Any, fitted: Any) -> None:
        fitted.model.save(
            str(self._key(spec) / "validation"),
            name=spec.display_name,
            metrics={"validation": fitted.metrics, "seconds": fitted.seconds},
        )

    def refit(self, spec: Any) -> tuple[Recommender, float] | None:
        from cinesync.serve.artifacts import load_artifact, read_metrics

        path = self._key(spec) / "refit"
        if not path.is_dir():
            return None
        return load_artifact(path), float(read_metrics(path)["seconds"])

    def save_refit(self, spec: Any, model: Recommender, seconds: float) -> None:
        model.save(str(self._key(spec) / "refit"), name=spec.display_name, metrics={"seconds": seconds})
