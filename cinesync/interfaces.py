"""The contracts every plugin implements: Recommender, Encoder, Fusion, Metric, ContextSignal.

A component is a class with a nested pydantic ``Config`` (extra fields forbidden). Its constructor takes either
a ``Config`` or the config's fields as keyword arguments, and ``type(c)(c.config)`` rebuilds an equivalent
component: the config is the whole of what a user chose. Learned state lives in tensors that ``state_tensors``
returns and ``load_state_tensors`` restores, so artifacts are safetensors files and never pickles.

This module imports no torch: torch is imported inside the methods that compute.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

import numpy as np
from pydantic import BaseModel, ConfigDict

from cinesync.errors import CineSyncError, DataError, NotFittedError

if TYPE_CHECKING:
    import torch

    from cinesync.data.dataset import Dataset, IdMap
    from cinesync.evaluation.ranking import RankedLists, ScoredBatch
    from cinesync.train.trainer import TrainerConfig

#: Major version of the plugin API. A plugin built against another major version is refused at load time.
PLUGIN_API_VERSION = 1


class ComponentConfig(BaseModel):
    """Base of every component's ``Config``: unknown fields are an error, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class Component:
    """What every plugin kind shares: a typed config and the plugin API version it was written for."""

    kind: ClassVar[str] = "component"
    plugin_api_version: ClassVar[int] = PLUGIN_API_VERSION
    Config: ClassVar[type[ComponentConfig]] = ComponentConfig

    def __init__(self, config: ComponentConfig | None = None, **params: Any) -> None:
        if config is not None and params:
            raise TypeError(f"{type(self).__name__}: pass either a Config or keyword parameters, not both")
        if config is None:
            config = self.Config(**params)
        elif not isinstance(config, self.Config):
            config = self.Config.model_validate(config.model_dump())
        self.config = config

    def get_params(self) -> dict[str, Any]:
        """The config as plain JSON-compatible values (round-trips through ``type(self)(**params)``)."""
        return self.config.model_dump(mode="json")

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"


# ---------------------------------------------------------------------------------------------------------
# Recommender
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Recommendations:
    """Top-k results in the caller's own ids: ``items[u]`` and ``scores[u]`` for ``users[u]``, best first.

    Each user gets ``k`` items where ``k`` candidates exist, fewer only when the catalogue (minus the items
    excluded) is smaller than ``k``.
    """

    users: list[Hashable]
    items: list[list[Hashable]]
    scores: list[list[float]]

    def to_records(self) -> list[dict[str, Any]]:
        return [
            {"user": user, "rank": rank + 1, "item": item, "score": score}
            for user, items, scores in zip(self.users, self.items, self.scores, strict=True)
            for rank, (item, score) in enumerate(zip(items, scores, strict=True))
        ]


class Recommender(Component, ABC):
    """A model that scores items for users.

    Contract:

    * ``fit(dataset, validation=None, trainer=None)`` learns from ``dataset`` (and may early-stop on
      ``validation``); it returns ``self``. Subclasses implement ``_fit``.
    * ``score(users, items=None)`` takes user *indices* (a 1-D int64 tensor) and returns a float tensor of
      shape ``(len(users), n_items)`` (or ``(len(users), len(items))``); higher is better. Scores are finite.
    * ``recommend(users, k)`` takes the users' own ids and returns :class:`Recommendations` in item ids,
      excluding each user's training items unless ``exclude_seen=False``.
    * ``state_tensors()`` / ``load_state_tensors()`` carry the learned state; together with the config and the
      id maps they are the whole model (see :mod:`cinesync.serve.artifacts`).

    ``requires`` names the data a model needs beyond user-item pairs (``"timestamps"``, ``"item_text"``,
    ``"item_features"``, ``"context:<column>"``, ``"domains"``); a dataset that lacks one fails early.
    """

    kind: ClassVar[str] = "recommender"
    requires: ClassVar[frozenset[str]] = frozenset()
    #: True for models trained by the shared :class:`~cinesync.train.trainer.Trainer` (epochs, early stopping).
    iterative: ClassVar[bool] = False
    #: True when ``score(users, items)`` is a predicted rating (on the data's rating scale), so rating-error
    #: metrics such as RMSE and MAE apply.
    predicts_ratings: ClassVar[bool] = False

    users: IdMap | None = None
    items: IdMap | None = None

    def __init__(self, config: ComponentConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.users = None
        self.items = None
        self.item_titles: list[str] | None = None
        self._seen_indptr: np.ndarray | None = None
        self._seen_indices: np.ndarray | None = None
        self._item_counts: np.ndarray | None = None
        #: What fitting measured (best epoch, seconds, ...); saved with the artifact.
        self.fit_info: dict[str, Any] = {}

    # -- lifecycle -----------------------------------------------------------------------------------------
    def fit(
        self,
        dataset: Dataset,
        *,
        validation: Dataset | None = None,
        trainer: TrainerConfig | None = None,
    ) -> Self:
        """Learn from ``dataset``; ``validation`` (same id maps) is used for early stopping where supported."""
        self.check_requirements(dataset)
        if len(dataset) == 0:
            raise DataError(
                f"cannot fit {type(self).__name__} on dataset {dataset.name!r}: it has no interactions"
            )
        if validation is not None and validation.items != dataset.items:
            raise DataError("the validation data must share the training data's item id map")
        self.users, self.items = dataset.users, dataset.items
        self.item_titles = dataset.item_titles()
        self._seen_indptr, self._seen_indices, _ = dataset.csr()
        self._item_counts = dataset.item_counts()
        self.fit_info = {}
        self._fit(dataset, validation=validation, trainer=trainer)
        return self

    @abstractmethod
    def _fit(self, dataset: Dataset, *, validation: Dataset | None, trainer: TrainerConfig | None) -> None:
        """Learn the model's state from ``dataset``."""

    @abstractmethod
    def score(
        self, users: torch.Tensor, items: torch.Tensor | None = None, context: Any = None
    ) -> torch.Tensor:
        """Scores of ``items`` (all items when None) for user indices ``users``: shape (len(users), n_items)."""

    def check_requirements(self, dataset: Dataset) -> None:
        from cinesync.data.requirements import missing_requirements

        missing = missing_requirements(dataset, self.requires)
        if missing:
            raise DataError(
                f"{type(self).__name__} needs {', '.join(missing)}, which dataset {dataset.name!r} does not provide"
            )

    @property
    def is_fitted(self) -> bool:
        return self.items is not None

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(
                f"{type(self).__name__} is not fitted: call fit(dataset) or cinesync.load(path)"
            )

    @property
    def n_users(self) -> int:
        self._check_fitted()
        assert self.users is not None
        return len(self.users)

    @property
    def n_items(self) -> int:
        self._check_fitted()
        assert self.items is not None
        return len(self.items)

    def seen_mask(self, users: torch.Tensor) -> torch.Tensor:
        """Boolean (len(users), n_items) mask of the items each user interacted with in the training data."""
        import torch

        self._check_fitted()
        assert self._seen_indptr is not None and self._seen_indices is not None
        indptr = torch.from_numpy(self._seen_indptr)
        rows = users.cpu().long()
        starts, ends = indptr[rows], indptr[rows + 1]
        lengths = ends - starts
        row_ids = torch.repeat_interleave(torch.arange(len(rows)), lengths)
        offsets = torch.arange(int(lengths.sum())) - torch.repeat_interleave(
            torch.cumsum(lengths, 0) - lengths, lengths
        )
        columns = torch.from_numpy(self._seen_indices)[torch.repeat_interleave(starts, lengths) + offsets]
        mask = torch.zeros(len(rows), self.n_items, dtype=torch.bool)
        mask[row_ids, columns] = True
        return mask

    # -- serving -------------------------------------------------------------------------------------------
    #: True for models that can score an anonymous session (a list of item ids) as well as a known user:
    #: they implement :meth:`score_sessions`, and ``recommend(sessions=...)`` works.
    supports_sessions: ClassVar[bool] = False

    def score_sessions(self, sessions: Sequence[np.ndarray]) -> torch.Tensor:
        """Scores of every item after each session (item *indices* in time order): shape (len(sessions), n_items).

        Only models with ``supports_sessions`` implement it; every session has at least one item.
        """
        raise self._sessions_unsupported()

    def _sessions_unsupported(self) -> CineSyncError:
        return CineSyncError(
            f"{type(self).__name__} scores the users it was trained on, not anonymous sessions; "
            "a sequential model (supports_sessions = True, e.g. sasrec or gru4rec) scores sessions"
        )

    def recommend(
        self,
        users: Sequence[Hashable] | None = None,
        k: int = 10,
        *,
        sessions: Sequence[Sequence[Hashable]] | None = None,
        exclude_seen: bool = True,
        candidates: Sequence[Hashable] | None = None,
        context: Any = None,
        batch_size: int = 1024,
    ) -> Recommendations:
        """Top-``k`` items for each of ``users`` (their own ids) or each of ``sessions``; see :class:`Recommendations`.

        Pass exactly one of ``users`` and ``sessions``. A session is a list of item ids in the order they were
        watched, for someone the model need not know (models with ``supports_sessions``); its results are
        labelled ``"session-0"``, ``"session-1"``, ... and ``exclude_seen`` excludes the session's own items.
        Unknown user, item or candidate ids raise :class:`~cinesync.errors.UnknownIdError` naming them; an
        empty session raises :class:`~cinesync.errors.CineSyncError`.
        """
        import torch

        self._check_fitted()
        assert self.users is not None and self.items is not None
        if k < 1:
            raise CineSyncError(f"k must be at least 1, got {k}")
        if (users is None) == (sessions is None):
            raise CineSyncError("recommend() takes either users or sessions (exactly one of them)")
        candidate_index = None if candidates is None else torch.from_numpy(self.items.index(candidates))
        if sessions is not None:
            if not self.supports_sessions:
                raise self._sessions_unsupported()
            session_items = [self.items.index(session) for session in sessions]
            empty = [position for position, items in enumerate(session_items) if len(items) == 0]
            if empty:
                raise CineSyncError(
                    f"session(s) {empty[:10]} are empty: a session needs at least one item id"
                )
            labels: list[Hashable] = [f"session-{position}" for position in range(len(session_items))]
        else:
            assert users is not None
            user_index = torch.from_numpy(self.users.index(users))
            labels = list(users)
        out_items: list[list[Hashable]] = []
        out_scores: list[list[float]] = []
        for start in range(0, len(labels), batch_size):
            seen: torch.Tensor | None
            with torch.no_grad():
                if sessions is not None:
                    batch_sessions = session_items[start : start + batch_size]
                    scores = self.score_sessions(batch_sessions).float()
                    seen = _session_mask(batch_sessions, self.n_items)
                else:
                    batch = user_index[start : start + batch_size]
                    scores = self.score(batch, None, context).float()
                    seen = self.seen_mask(batch) if exclude_seen else None
            expected = (min(batch_size, len(labels) - start), self.n_items)
            if scores.shape != expected:
                raise CineSyncError(
                    f"{type(self).__name__} returned scores of shape {tuple(scores.shape)}, expected {expected}"
                )
            if torch.isnan(scores).any():
                raise CineSyncError(f"{type(self).__name__} returned NaN scores")
            allowed = torch.ones_like(scores, dtype=torch.bool)
            if candidate_index is not None:
                allowed = torch.zeros_like(allowed)
                allowed[:, candidate_index] = True
            if exclude_seen and seen is not None:
                allowed &= ~seen
            scores = scores.masked_fill(~allowed, float("-inf"))
            top_scores, top_items = torch.topk(scores, min(k, self.n_items), dim=1)
            n_allowed = allowed.sum(1).tolist()
            for row in range(len(scores)):
                keep = min(k, int(n_allowed[row]))
                out_items.append(self.items.lookup(top_items[row, :keep].tolist()))
                out_scores.append(top_scores[row, :keep].tolist())
        return Recommendations(users=labels, items=out_items, scores=out_scores)

    # -- persistence ---------------------------------------------------------------------------------------
    @abstractmethod
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The learned state as named tensors (contiguous, CPU); the inverse of ``load_state_tensors``."""

    @abstractmethod
    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore the learned state; ``self.users``/``self.items`` are already set."""

    def base_state(self) -> dict[str, np.ndarray]:
        """State every recommender saves: the training interactions (to exclude seen items) and item counts."""
        self._check_fitted()
        assert (
            self._seen_indptr is not None and self._seen_indices is not None and self._item_counts is not None
        )
        return {
            "seen_indptr": self._seen_indptr,
            "seen_indices": self._seen_indices,
            "item_counts": self._item_counts,
        }

    def restore_base_state(
        self, users: IdMap, items: IdMap, arrays: dict[str, np.ndarray], item_titles: list[str] | None
    ) -> None:
        self.users, self.items, self.item_titles = users, items, item_titles
        self._seen_indptr = arrays["seen_indptr"]
        self._seen_indices = arrays["seen_indices"]
        self._item_counts = arrays["item_counts"]

    def save(self, path: str, **kwargs: Any) -> None:
        """Write this model as an artifact directory (see :func:`cinesync.serve.artifacts.save_artifact`)."""
        from cinesync.serve.artifacts import save_artifact

        save_artifact(self, path, **kwargs)

    @classmethod
    def load(cls, path: str) -> Recommender:
        """Load an artifact directory written by :meth:`save`."""
        from cinesync.serve.artifacts import load_artifact

        model = load_artifact(path)
        if not isinstance(model, cls):
            raise CineSyncError(f"{path} holds a {type(model).__name__}, not a {cls.__name__}")
        return model

    def n_parameters(self) -> int:
        return int(sum(t.numel() for t in self.state_tensors().values()))


def _session_mask(sessions: Sequence[np.ndarray], n_items: int) -> torch.Tensor:
    """Boolean (len(sessions), n_items) mask of the items in each session."""
    import torch

    mask = torch.zeros(len(sessions), n_items, dtype=torch.bool)
    for row, items in enumerate(sessions):
        mask[row, torch.from_numpy(items)] = True
    return mask


# ---------------------------------------------------------------------------------------------------------
# Metric
# ---------------------------------------------------------------------------------------------------------


class Metric(Component, ABC):
    """A quality measure computed from ranked lists and ground truth.

    ``compute(lists, context)`` receives :class:`~cinesync.evaluation.ranking.RankedLists` for every evaluated
    user at once (top-``K`` item indices with ``K`` at least ``k``, hit flags, number of relevant items, rank
    of the first relevant item in the full ranking) and returns either a per-user tensor (``per_user = True``;
    the reported value is its mean) or a 0-d tensor for catalogue-level metrics. It must be vectorized.

    ``needs`` names evaluation-context entries it reads; the evaluator builds each one once per evaluation,
    only when some requested metric needs it (see :mod:`cinesync.evaluation.context` for the entries:
    ``"item_counts"``, ``"item_users"``, ``"n_users"``, ``"item_genres"``, ``"item_features"``, ``"catalog"``,
    ``"ratings"``), or takes it from the caller's ``context=`` (``"outcomes"``, ``"item_embeddings"``). A metric
    whose needs depend on its config overrides ``needs`` with a property.

    A per-user value may be NaN for a user the metric cannot judge (an ILD list of fewer than two items, a
    user without logged outcomes): the reported value is :meth:`summarise` (the mean, unless a metric such as
    RMSE overrides it) of the other users' values, and the per-user vector keeps the NaN so that paired tests
    can drop those users.

    Metrics that need more than the top of the ranking (AUC over the whole ranking, rating errors) set
    ``needs_scores = True`` and implement :meth:`compute_batch` instead: the evaluator calls it on every
    batch of users while it still holds their full score rows, and concatenates its per-user outputs.
    Such metrics are per-user; the evaluator never calls their ``compute``, which should raise an error
    saying that the metric needs score rows.
    """

    kind: ClassVar[str] = "metric"
    higher_is_better: ClassVar[bool] = True
    per_user: ClassVar[bool] = True
    needs: ClassVar[frozenset[str]] = frozenset()
    needs_scores: ClassVar[bool] = False

    @property
    def k(self) -> int | None:
        return getattr(self.config, "k", None)

    @property
    def name(self) -> str:
        """How the metric is written in manifests and tables: ``id@k`` or ``id``."""
        base = getattr(type(self), "metric_id", type(self).__name__.lower())
        return f"{base}@{self.k}" if self.k is not None else base

    @abstractmethod
    def compute(self, lists: RankedLists, context: dict[str, Any]) -> torch.Tensor:
        """Per-user values (shape ``(n_users,)``) or a 0-d catalogue-level value."""

    def summarise(self, values: np.ndarray) -> float:
        """The reported value of a per-user metric from the values of the users it judged (no NaN): their mean."""
        return float(values.mean())

    def compute_batch(self, batch: ScoredBatch, context: dict[str, Any]) -> torch.Tensor:
        """Per-user values ``(len(batch.users),)`` of one batch of users from their full score rows.

        Called only when ``needs_scores`` is True; see :class:`~cinesync.evaluation.ranking.ScoredBatch`.
        """
        raise NotImplementedError(
            f"metric {self.name} ({type(self).__name__}) sets needs_scores but does not implement compute_batch"
        )


# ---------------------------------------------------------------------------------------------------------
# Encoder, Fusion, ContextSignal
# ---------------------------------------------------------------------------------------------------------

Modality = Literal["text", "image", "audio", "metadata", "context"]


class Encoder(Component, ABC):
    """Turns raw content of one modality into vectors of a known dimension.

    ``encode(batch)`` takes a sequence of raw inputs (strings, image paths, audio paths, feature dicts) and
    returns a float tensor ``(len(batch), dim)``. Heavy libraries (transformers, image decoders) are imported
    inside methods, not at module import.
    """

    kind: ClassVar[str] = "encoder"
    modality: ClassVar[Modality]

    @property
    @abstractmethod
    def dim(self) -> int:
        """Size of the vectors ``encode`` returns."""

    @abstractmethod
    def encode(self, batch: Sequence[Any]) -> torch.Tensor:
        """Vectors for ``batch``: shape ``(len(batch), dim)``."""


@dataclass
class FusionInput:
    """What a fusion sees for a batch of users: one raw score matrix per member and what it may condition on.

    ``scores`` holds one ``(len(users), n_items)`` float matrix per member, in ``members`` order, exactly as
    each member's ``score`` returned it (scales differ: normalising them is the fusion's job, see
    :mod:`cinesync_plugins.fusions._fusion`). ``excluded`` marks the items that will not be ranked for each
    user (their training items); a fusion should leave them out of any per-user statistics. ``user_features``
    (``len(users) x F``) and ``item_features`` (``n_items x G``) are the ensemble's simple descriptors, named
    by ``user_feature_names`` and ``item_feature_names`` (see :mod:`cinesync.ensemble`).
    """

    scores: list[torch.Tensor]
    users: torch.Tensor
    members: list[str]
    excluded: torch.Tensor | None = None
    user_features: torch.Tensor | None = None
    item_features: torch.Tensor | None = None
    user_feature_names: tuple[str, ...] = ()
    item_feature_names: tuple[str, ...] = ()


@dataclass
class FusionOutput:
    """Fused scores ``(users, n_items)``, with the weight each member had for each user ``(users, members)``.

    ``member_weights`` rows sum to 1 over the members that contributed; a fusion whose weights are not
    per-user repeats the same row.
    """

    scores: torch.Tensor
    member_weights: torch.Tensor


class Fusion(Component, ABC):
    """Combines member score matrices into one ranking.

    Contract:

    * ``fit(inputs, relevant)`` learns from *validation* data only: ``inputs`` are the members' scores for the
      validation users (members trained on the training split) and ``relevant`` the boolean
      ``users x items`` matrix of their held-out validation items. Fusions with nothing to learn keep the
      default, which does nothing. It returns ``self``.
    * ``fuse(inputs)`` returns a :class:`FusionOutput` for any users: batched tensor work, no Python loop over
      users or items. It must accept inputs from the same members in the same order as ``fit`` saw.
    * Learned state lives in ``state_tensors()`` / ``load_state_tensors()`` (saved in the ensemble artifact
      as safetensors), together with ``members`` (the names ``fit`` saw), set by ``fit``.
    """

    kind: ClassVar[str] = "fusion"

    def __init__(self, config: ComponentConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        #: The member names fit saw, in order (empty before fit).
        self.members: list[str] = []

    def fit(self, inputs: FusionInput, relevant: torch.Tensor) -> Self:
        """Learn from validation data (see the class docstring); the default learns nothing."""
        self.members = list(inputs.members)
        return self

    @abstractmethod
    def fuse(self, inputs: FusionInput) -> FusionOutput:
        """Fused scores and member weights for ``inputs.users``."""

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Learned state as named tensors; empty for fusions that learn nothing."""
        return {}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_tensors` returned."""


class ContextSignal(Component, ABC):
    """Reads context columns of interactions or requests and produces features.

    ``columns`` names the columns it reads; ``features(frame)`` returns ``(len(frame), dim)`` floats.
    """

    kind: ClassVar[str] = "context_signal"
    columns: ClassVar[tuple[str, ...]] = ()

    @property
    @abstractmethod
    def dim(self) -> int:
        """Number of features per row."""

    @abstractmethod
    def features(self, frame: Any) -> torch.Tensor:
        """Features for each row of ``frame`` (a pandas DataFrame with ``columns``)."""


#: Interface class of each kind, by kind name.
INTERFACES: dict[str, type[Component]] = {
    "recommender": Recommender,
    "encoder": Encoder,
    "fusion": Fusion,
    "metric": Metric,
    "context_signal": ContextSignal,
}


def ensure_component_of_kind(cls: object, kind: str) -> str | None:
    """Why ``cls`` is not a valid component of ``kind``, or None when it is."""
    interface = INTERFACES[kind]
    if not isinstance(cls, type) or not issubclass(cls, interface):
        return f"{cls!r} is not a subclass of cinesync.interfaces.{interface.__name__}"
    if not (isinstance(cls.Config, type) and issubclass(cls.Config, BaseModel)):
        return f"{cls.__name__}.Config is not a pydantic model"
    if cls.Config.model_config.get("extra") != "forbid":
        return f"{cls.__name__}.Config must forbid extra fields (derive it from cinesync.interfaces.ComponentConfig)"
    if cls.plugin_api_version != PLUGIN_API_VERSION:
        return (
            f"{cls.__name__} was written for plugin API version {cls.plugin_api_version}; "
            f"this cinesync provides version {PLUGIN_API_VERSION}"
        )
    abstract = getattr(cls, "__abstractmethods__", None)
    if abstract:
        return f"{cls.__name__} does not implement {', '.join(sorted(abstract))}"
    return None
