"""Declarative manifests (TOML): a model, an evaluation suite of models, an ensemble.

Every manifest has a ``kind`` (``model``, ``suite`` or ``ensemble``) and, where it evaluates, an ``[evaluation]``
table that pins the whole protocol: dataset, filters, split, candidates, metrics and cut-offs. A manifest that
does not validate raises :class:`~cinesync.errors.ManifestError` with one readable message per problem, each
naming the file, the field path and what was expected.

Two levels of checking: :func:`load_manifest` validates the structure (no plugin code imported);
:func:`check_components` then resolves every component id and validates its params and training options
against the plugin's own ``Config``.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from cinesync.errors import CineSyncError, ManifestError

_METRIC_SPEC = re.compile(r"^[a-z][a-z0-9_.\-]*(@[1-9][0-9]*)?$")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class DatasetSpec(StrictModel):
    """Which data: a name resolved under ``--data-dir``/``CINESYNC_DATA_DIR`` (``ml-latest-small`` ships inside
    cinesync) or a path, plus loader options (e.g. ``feedback = "ratings"`` for the anime data)."""

    name: str = "ml-latest-small"
    options: dict[str, Any] = Field(default_factory=dict)


class FilterSpec(StrictModel):
    """Interaction filters applied before splitting."""

    min_rating: float | None = None
    min_user_interactions: int = Field(default=0, ge=0)
    min_item_interactions: int = Field(default=0, ge=0)
    k_core: bool = False


class SplitSpec(StrictModel):
    """How interactions are divided into train / validation / test."""

    method: Literal["leave_last_out", "temporal", "random"] = "leave_last_out"
    validation: bool = True
    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    validation_fraction: float = Field(default=0.1, gt=0, lt=1)
    seed: int = 0


_TESTS: tuple[Literal["t", "wilcoxon"], ...] = ("t", "wilcoxon")


class SignificanceSpec(StrictModel):
    """Paired significance tests of every model against baselines (see :mod:`cinesync.evaluation.statistics`).

    ``baseline``: model name(s) to compare against; empty means the best model on the first metric. For each
    baseline, metric and test, the comparisons form one family corrected with ``correction``; ``bootstrap``
    resamples give every 95% interval, seeded with ``seed``.
    """

    baseline: list[str] = Field(default_factory=list)
    tests: list[Literal["t", "wilcoxon"]] = Field(default_factory=lambda: list(_TESTS), min_length=1)
    correction: Literal["holm", "bh", "bonferroni", "none"] = "holm"
    alpha: float = Field(default=0.05, gt=0, lt=1)
    bootstrap: int = Field(default=1000, ge=100)
    seed: int = 0

    @field_validator("baseline", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class FairnessSpec(StrictModel):
    """User groups for the fairness tables (see :mod:`cinesync.evaluation.fairness`).

    ``attributes``: user attributes of the dataset (ml-100k: ``gender``, ``age``, ``occupation``) or
    ``activity`` (training interactions per user, always available). ``bands`` cut numeric attributes at the
    given lower edges (MovieLens ages by default); other numeric attributes and ``activity`` are cut at
    ``quantiles``. ``exposure_k``: length of the recommendation lists saved with a run, read by the exposure,
    Lorenz and popularity-bias sections.
    """

    attributes: list[str] = Field(default_factory=lambda: ["activity"])
    bands: dict[str, list[float]] = Field(
        default_factory=lambda: {"age": [18.0, 25.0, 35.0, 45.0, 50.0, 56.0]}
    )
    quantiles: list[float] = Field(default_factory=lambda: [1 / 3, 2 / 3], min_length=1)
    exposure_k: int = Field(default=10, ge=1)

    @field_validator("quantiles")
    @classmethod
    def _quantiles_inside(cls, value: list[float]) -> list[float]:
        if value != sorted(set(value)) or not all(0 < q < 1 for q in value):
            raise ValueError("quantiles must be distinct, ascending and strictly between 0 and 1")
        return value

    @field_validator("bands")
    @classmethod
    def _bands_ascending(cls, value: dict[str, list[float]]) -> dict[str, list[float]]:
        for attribute, edges in value.items():
            if not edges or edges != sorted(set(edges)):
                raise ValueError(f"bands.{attribute} must be distinct ascending lower edges, got {edges}")
        return value


DEFAULT_METRICS: tuple[str | MetricSpec, ...] = ("hr@10", "ndcg@10", "recall@20", "mrr")


class MetricSpec(BaseModel):
    """A metric with parameters beyond its cut-off: ``{ id = "ild", k = 10, features = "genres" }``.

    Fields other than ``id`` and ``k`` are passed to the metric's ``Config`` (checked by ``check_components``).
    """

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    id: str = Field(pattern=r"^[a-z][a-z0-9_.\-]*$")
    k: int | None = Field(default=None, ge=1)


class EvaluationProtocol(StrictModel):
    """The evaluation protocol, pinned: full ranking over the catalogue with each user's known items excluded.

    ``refit``: after validation (early stopping, tuning), refit each model on train + validation and evaluate
    on test with train + validation items excluded; without it, models trained on train alone are evaluated
    on test. ``significance`` and ``fairness`` configure the report a run writes (docs/evaluation.md).
    """

    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    filters: FilterSpec = Field(default_factory=FilterSpec)
    split: SplitSpec = Field(default_factory=SplitSpec)
    candidates: Literal["all"] = "all"
    metrics: list[str | MetricSpec] = Field(default_factory=lambda: [*DEFAULT_METRICS], min_length=1)
    refit: bool = True
    batch_size: int = Field(default=1024, ge=1)
    outcomes: str | None = Field(
        default=None,
        description="Outcome log for business metrics (ctr, watch_time, ...): a CSV/Parquet path relative to "
        "the manifest, or 'generated' for a simulated log.",
    )
    significance: SignificanceSpec = Field(default_factory=SignificanceSpec)
    fairness: FairnessSpec = Field(default_factory=FairnessSpec)

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset_from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("metrics")
    @classmethod
    def _metric_syntax(cls, value: list[str | MetricSpec]) -> list[str | MetricSpec]:
        for spec in value:
            if isinstance(spec, str) and not _METRIC_SPEC.match(spec):
                raise ValueError(f"metric {spec!r} is not of the form 'id' or 'id@k' (e.g. 'ndcg@10', 'mrr')")
        return value


class ComponentSpec(StrictModel):
    """One component with its parameters."""

    component: str
    params: dict[str, Any] = Field(default_factory=dict)


class ModelSpec(StrictModel):
    """A model in a suite or ensemble: a component with params, or a model manifest file to take them from."""

    name: str | None = None
    component: str | None = None
    manifest: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _component_or_manifest(self) -> ModelSpec:
        if (self.component is None) == (self.manifest is None):
            raise ValueError(
                "give exactly one of 'component' (a recommender id) or 'manifest' (a model file)"
            )
        return self

    @property
    def display_name(self) -> str:
        return self.name or self.component or Path(self.manifest or "model").stem


class ModelManifest(StrictModel):
    """One recommender: ``component`` id, its ``params`` and ``training`` options, optionally an evaluation."""

    kind: Literal["model"]
    name: str
    description: str = ""
    component: str
    params: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    evaluation: EvaluationProtocol | None = None


class SuiteManifest(StrictModel):
    """Several models trained and evaluated under one protocol, compared in one table."""

    kind: Literal["suite"]
    name: str
    description: str = ""
    evaluation: EvaluationProtocol = Field(default_factory=EvaluationProtocol)
    models: list[ModelSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> SuiteManifest:
        names = [m.display_name for m in self.models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f"model names must be unique; give each a 'name' ({', '.join(duplicates)} repeat)"
            )
        unknown = [b for b in self.evaluation.significance.baseline if b not in names]
        if unknown:
            raise ValueError(
                f"evaluation.significance.baseline names {', '.join(unknown)}, which is not a model of this "
                f"suite (models: {', '.join(names)})"
            )
        return self


class SelectionSpec(StrictModel):
    """Greedy forward selection of members on validation (Caruana et al., ICML 2004)."""

    method: Literal["none", "greedy"] = "none"
    rounds: int = Field(10, ge=1, description="Most additions (with replacement) to the selected bag.")
    metric_k: int = Field(10, gt=0, description="Cut-off of the validation NDCG the selection maximises.")


class ConfidenceSpec(StrictModel):
    """How per-item confidence is computed and calibrated (on validation) for the fused top lists."""

    agreement_k: int = Field(20, gt=0, description="A member 'agrees' on an item in its own top agreement_k.")
    calibration_k: int = Field(
        20, gt=0, description="Fused top items per validation user the calibrator sees."
    )


class EnsembleManifest(StrictModel):
    """Members, a fusion and an evaluation; the fusion is fitted on validation data only.

    ``on_member_failure``: ``"fail"`` stops on the first member that fails to train or score; ``"skip"`` goes on
    without it, with a warning naming it (the fusion renormalises over the members left).
    """

    kind: Literal["ensemble"]
    name: str
    description: str = ""
    members: list[ModelSpec] = Field(min_length=2)
    fusion: ComponentSpec
    on_member_failure: Literal["fail", "skip"] = "fail"
    selection: SelectionSpec = Field(default_factory=SelectionSpec)
    confidence: ConfidenceSpec = Field(default_factory=ConfidenceSpec)
    evaluation: EvaluationProtocol = Field(default_factory=EvaluationProtocol)

    @model_validator(mode="after")
    def _unique_names(self) -> EnsembleManifest:
        names = [m.display_name for m in self.members]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f"member names must be unique; give each a 'name' ({', '.join(duplicates)} repeat)"
            )
        if "ensemble" in names:
            raise ValueError("'ensemble' names the fused row of the results: give that member another name")
        return self


Manifest = Annotated[ModelManifest | SuiteManifest | EnsembleManifest, Field(discriminator="kind")]
_MANIFEST_ADAPTER: TypeAdapter[ModelManifest | SuiteManifest | EnsembleManifest] = TypeAdapter(Manifest)
MANIFEST_KINDS: dict[str, type[BaseModel]] = {
    "model": ModelManifest,
    "suite": SuiteManifest,
    "ensemble": EnsembleManifest,
}


def _field_path(location: tuple[Any, ...]) -> str:
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def _explain(error: Any) -> str:
    kind = error["type"]
    if kind == "missing":
        return "is required but missing"
    if kind == "extra_forbidden":
        return f"is not a known field (value {error.get('input')!r})"
    return f"{error['msg']} (got {error.get('input')!r})"


def format_validation_error(error: ValidationError, source: str, prefix: tuple[Any, ...] = ()) -> str:
    """One line per problem: ``source: field.path: what was wrong``."""
    lines = []
    for problem in error.errors():
        location = tuple(problem["loc"])
        if location and location[0] in MANIFEST_KINDS:  # the discriminator tag is not a field the user wrote
            location = location[1:]
        lines.append(f"{source}: {_field_path(prefix + location)} {_explain(problem)}")
    return "\n".join(lines)


def parse_manifest(
    data: dict[str, Any], source: str = "<manifest>"
) -> ModelManifest | SuiteManifest | EnsembleManifest:
    """Validate a manifest already read into a dict; ``source`` names it in errors."""
    kind = data.get("kind")
    if kind not in MANIFEST_KINDS:
        raise ManifestError(
            f"{source}: kind {'is required but missing' if kind is None else f'{kind!r} is not known'}; "
            f"expected one of {', '.join(repr(k) for k in MANIFEST_KINDS)}"
        )
    try:
        return _MANIFEST_ADAPTER.validate_python(data)
    except ValidationError as error:
        raise ManifestError(format_validation_error(error, source)) from None


def load_manifest(path: str | Path) -> ModelManifest | SuiteManifest | EnsembleManifest:
    """Read and validate a TOML manifest; errors name the file and field."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such manifest file") from None
    except tomllib.TOMLDecodeError as error:
        raise ManifestError(f"{path}: not valid TOML: {error}") from None
    manifest = parse_manifest(data, str(path))
    if isinstance(manifest, SuiteManifest | EnsembleManifest):
        specs = manifest.models if isinstance(manifest, SuiteManifest) else manifest.members
        for spec in specs:
            if spec.manifest is not None:
                _inline_model_manifest(spec, path)
    return manifest


def _inline_model_manifest(spec: ModelSpec, owner: Path) -> None:
    """Fill ``spec`` from the model manifest it names (relative to ``owner``); its own params win."""
    target = (owner.parent / spec.manifest).resolve() if spec.manifest else owner
    model = load_manifest(target)
    if not isinstance(model, ModelManifest):
        raise ManifestError(f"{owner}: {spec.manifest} is a {model.kind} manifest, expected a model manifest")
    spec.name = spec.name or model.name
    spec.component = model.component
    spec.params = {**model.params, **spec.params}
    spec.training = {**model.training, **spec.training}
    spec.manifest = None


def check_components(manifest: ModelManifest | SuiteManifest | EnsembleManifest, source: str) -> None:
    """Resolve every component the manifest names and validate params and training options against the
    plugin's ``Config``; raises one :class:`ManifestError` listing every problem. Imports the plugins used."""
    from cinesync import registry
    from cinesync.train.trainer import TrainerConfig

    problems: list[str] = []

    def check(kind: str, ref: str | None, params: dict[str, Any], where: tuple[Any, ...]) -> None:
        try:
            cls: Any = registry.load(kind, ref or "")
        except CineSyncError as error:
            problems.append(f"{source}: {_field_path((*where, 'component'))}: {error}")
            return
        try:
            cls.Config.model_validate(params)
        except ValidationError as error:
            problems.append(format_validation_error(error, source, (*where, "params")))

    def check_training(training: dict[str, Any], where: tuple[Any, ...]) -> None:
        try:
            TrainerConfig.model_validate(training)
        except ValidationError as error:
            problems.append(format_validation_error(error, source, (*where, "training")))

    if isinstance(manifest, ModelManifest):
        check("recommender", manifest.component, manifest.params, ())
        check_training(manifest.training, ())
    else:
        field = "models" if isinstance(manifest, SuiteManifest) else "members"
        specs = manifest.models if isinstance(manifest, SuiteManifest) else manifest.members
        for position, spec in enumerate(specs):
            check("recommender", spec.component, spec.params, (field, position))
            check_training(spec.training, (field, position))
        if isinstance(manifest, EnsembleManifest):
            check("fusion", manifest.fusion.component, manifest.fusion.params, ("fusion",))
    evaluation = manifest.evaluation
    if evaluation is not None:
        from cinesync.evaluation.metrics import parse_metric

        for position, metric in enumerate(evaluation.metrics):
            try:
                parse_metric(metric)
            except CineSyncError as error:
                problems.append(f"{source}: evaluation.metrics[{position}]: {error}")
    if problems:
        raise ManifestError("\n".join(problems))


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of each manifest kind, for editors and external validation."""
    return {kind: model.model_json_schema() for kind, model in MANIFEST_KINDS.items()}
