"""Running a suite manifest: load data, split, train, validate, refit, evaluate, save, compare.

The protocol is the manifest's ``[evaluation]`` table. For each model:

1. Iterative models (trained by the shared trainer) fit on *train* with early stopping on *validation*; the
   validation metrics are recorded.
2. With ``refit = true`` (the default) the model is fitted again on *train + validation* (iterative models for
   the best epoch count found in step 1) and evaluated on *test* with train + validation items excluded.
   With ``refit = false`` the model from step 1 is evaluated on test.
3. The model is saved as an artifact under ``OUTPUT/artifacts/<name>``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cinesync.errors import CineSyncError
from cinesync.manifest import EvaluationProtocol, ModelSpec, SuiteManifest

if TYPE_CHECKING:
    from cinesync.data.dataset import Dataset
    from cinesync.data.splits import Split
    from cinesync.interfaces import Recommender

log = logging.getLogger(__name__)


@dataclass
class ModelResult:
    """What one model of a suite measured."""

    name: str
    component: str
    metrics: dict[str, float]
    validation: dict[str, float]
    train_seconds: float
    eval_seconds: float
    n_parameters: int
    fit_info: dict[str, Any]
    artifact: str | None
    per_user: dict[str, list[float]] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {
            **self.metrics,
            "train_seconds": round(self.train_seconds, 3),
            "eval_seconds": round(self.eval_seconds, 3),
            "n_parameters": self.n_parameters,
            "validation": self.validation,
            "fit_info": self.fit_info,
            "artifact": self.artifact,
        }


@dataclass
class SuiteResult:
    name: str
    protocol: dict[str, Any]
    dataset: dict[str, Any]
    results: dict[str, ModelResult]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "suite": self.name,
            "protocol": self.protocol,
            "dataset": self.dataset,
            "results": {name: result.row() for name, result in self.results.items()},
            "seconds": round(self.seconds, 3),
        }


def prepare_data(protocol: EvaluationProtocol, data_dir: str | os.PathLike[str] | None = None) -> Split:
    """Load, filter and split the dataset the protocol names."""
    from cinesync.data.loaders import load_dataset
    from cinesync.data.splits import filter_interactions, split_dataset

    dataset = load_dataset(
        protocol.dataset.name, None if data_dir is None else Path(data_dir), **protocol.dataset.options
    )
    filters = protocol.filters
    if filters.min_rating is not None or filters.min_user_interactions or filters.min_item_interactions:
        dataset = filter_interactions(
            dataset,
            min_rating=filters.min_rating,
            min_user_interactions=filters.min_user_interactions,
            min_item_interactions=filters.min_item_interactions,
            k_core=filters.k_core,
        )
    split = protocol.split
    options: dict[str, Any] = {}
    if split.method == "leave_last_out":
        options["validation"] = split.validation
    else:
        options.update(
            test_fraction=split.test_fraction,
            validation_fraction=split.validation_fraction if split.validation else 0.0,
        )
    if split.method == "random":
        options["seed"] = split.seed
    return split_dataset(dataset, split.method, **options)


def train_and_evaluate(
    spec: ModelSpec,
    split: Split,
    protocol: EvaluationProtocol,
    *,
    progress: bool = True,
) -> tuple[Recommender, ModelResult]:
    """Fit one model under the protocol and evaluate it on the test split."""
    from cinesync import registry
    from cinesync.evaluation import evaluate
    from cinesync.train.trainer import TrainerConfig

    assert spec.component is not None
    name = spec.display_name
    trainer = TrainerConfig.model_validate({"progress": progress, **spec.training})
    model: Recommender = registry.build("recommender", spec.component, **spec.params)
    validation_metrics: dict[str, float] = {}
    fit_info: dict[str, Any] = {}
    train_seconds = 0.0
    if model.iterative and split.valid is not None:
        started = time.perf_counter()
        model.fit(split.train, validation=split.valid, trainer=trainer)
        train_seconds += time.perf_counter() - started
        validation_metrics = evaluate(
            model, split.valid, metrics=protocol.metrics, batch_size=protocol.batch_size
        ).metrics
        fit_info["validation_phase"] = dict(model.fit_info)
    if protocol.refit or split.valid is None or not model.iterative:
        train_data = split.train_valid if protocol.refit else split.train
        refit_trainer = trainer
        best_epoch = fit_info.get("validation_phase", {}).get("best_epoch")
        if model.iterative and best_epoch:
            refit_trainer = trainer.model_copy(
                update={"epochs": int(best_epoch), "early_stopping_metric": None}
            )
        model = registry.build("recommender", spec.component, **spec.params)
        started = time.perf_counter()
        model.fit(train_data, trainer=refit_trainer)
        train_seconds += time.perf_counter() - started
    fit_info.update(model.fit_info)
    model.fit_info = fit_info
    evaluation = evaluate(model, split.test, metrics=protocol.metrics, batch_size=protocol.batch_size)
    result = ModelResult(
        name=name,
        component=spec.component,
        metrics=evaluation.metrics,
        validation=validation_metrics,
        train_seconds=train_seconds,
        eval_seconds=evaluation.seconds,
        n_parameters=model.n_parameters(),
        fit_info=fit_info,
        artifact=None,
        per_user={k: v.tolist() for k, v in evaluation.per_user.items()},
    )
    return model, result


def run_suite(
    manifest: SuiteManifest,
    *,
    source: str = "<suite>",
    data_dir: str | os.PathLike[str] | None = None,
    output: str | os.PathLike[str] | None = None,
    progress: bool = True,
    on_result: Any = None,
) -> SuiteResult:
    """Run every model of ``manifest``; artifacts and ``results.json`` go under ``output`` when given.

    ``on_result(result)`` is called after each model (the CLI prints progress with it).
    """
    from cinesync.hooks import plugin_manager
    from cinesync.manifest import check_components

    check_components(manifest, source)
    started = time.perf_counter()
    protocol = manifest.evaluation
    split = prepare_data(protocol, data_dir)
    _check_requirements(manifest, split.train, source)
    results: dict[str, ModelResult] = {}
    for spec in manifest.models:
        model, result = train_and_evaluate(spec, split, protocol, progress=progress)
        if output is not None:
            artifact = Path(output) / "artifacts" / result.name
            model.save(
                str(artifact),
                name=result.name,
                metrics=result.metrics,
                training=spec.training,
                dataset=protocol.dataset.name,
                evaluation=protocol.model_dump(mode="json", exclude_none=True),
            )
            result.artifact = str(artifact)
        results[result.name] = result
        plugin_manager().hook.cinesync_evaluation_end(
            model_name=result.name, dataset=protocol.dataset.name, metrics=result.metrics
        )
        if on_result is not None:
            on_result(result)
    suite = SuiteResult(
        name=manifest.name,
        protocol=protocol.model_dump(mode="json"),
        dataset={
            **split.train_valid.summary(),
            "interactions": len(split.train) + len(split.test) + (len(split.valid) if split.valid else 0),
            "test_users": int(split.test.interactions["user"].nunique()),
        },
        results=results,
        seconds=time.perf_counter() - started,
    )
    if output is not None:
        write_json(Path(output) / "results.json", suite.to_json())
    return suite


def _check_requirements(manifest: SuiteManifest, train: Dataset, source: str) -> None:
    from cinesync import registry
    from cinesync.data.requirements import missing_requirements

    problems = []
    for position, spec in enumerate(manifest.models):
        cls: Any = registry.load("recommender", spec.component or "")
        missing = missing_requirements(train, cls.requires)
        if missing:
            problems.append(
                f"{source}: models[{position}] ({spec.display_name}) needs {', '.join(missing)}, "
                f"which dataset {manifest.evaluation.dataset.name!r} does not provide"
            )
    if problems:
        raise CineSyncError("\n".join(problems))


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON atomically (temporary file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    staging.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    os.replace(staging, path)
