"""Running a suite manifest: load data, split, train, validate, refit, evaluate, save, compare.

The protocol is the manifest's ``[evaluation]`` table. For each model:

1. Iterative models (trained by the shared trainer) fit on *train* with early stopping on *validation*; the
   validation metrics are recorded.
2. With ``refit = true`` (the default) the model is fitted again on *train + validation* (iterative models for
   the best epoch count found in step 1) and evaluated on *test* with train + validation items excluded.
   With ``refit = false`` the model from step 1 is evaluated on test.
3. The model is saved as an artifact under ``OUTPUT/artifacts/<name>``.

With an output directory the run also keeps what reports need (:func:`save_run` / :func:`load_run`)::

    OUTPUT/results.json                     metric means per model (+ "metrics": direction of each metric)
    OUTPUT/evaluation/models/<name>.safetensors
                                            "users" (int64 user indices), "top_items" (int32, users x k,
                                            -1 pads) and "per_user/<metric>" (float64) per evaluated user
    OUTPUT/evaluation/users.parquet         evaluated users: index, id, activity (history interactions) and
                                            the dataset's user attributes
    OUTPUT/evaluation/items.safetensors     "item_counts": history interactions per item (popularity)
    OUTPUT/report.json, report.md, report.html   (:mod:`cinesync.evaluation.report`)

Every file is written atomically (temporary file + rename); nothing is pickled.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import Field

from cinesync.errors import CineSyncError
from cinesync.interfaces import ComponentConfig, Metric
from cinesync.manifest import EvaluationProtocol, ModelSpec, SuiteManifest

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from cinesync.data.dataset import Dataset
    from cinesync.data.splits import Split
    from cinesync.evaluation.ranking import RankedLists
    from cinesync.interfaces import Recommender

log = logging.getLogger(__name__)

#: Version of the run directory layout under ``OUTPUT/evaluation``; :func:`load_run` refuses others.
RUN_FORMAT = 1


class TopItemsRecorder(Metric):
    """Not a quality measure: keeps the top-``k`` lists the evaluator ranked, for exposure and popularity-bias
    reports, so they come from the very ranking the metrics judged. ``compute`` returns 0."""

    metric_id: ClassVar[str] = "top_items"
    per_user: ClassVar[bool] = False

    class Config(ComponentConfig):
        k: int = Field(10, gt=0)

    def __init__(self, config: ComponentConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.users: np.ndarray | None = None
        self.items: np.ndarray | None = None

    def compute(self, lists: RankedLists, context: dict[str, Any]) -> torch.Tensor:
        import torch

        self.users = lists.users.cpu().numpy().astype(np.int64)
        assert self.k is not None
        self.items = lists.items_at(self.k).cpu().numpy().astype(np.int32)
        return torch.tensor(0.0)


@dataclass
class ModelResult:
    """What one model of a suite measured.

    ``per_user`` maps each per-user metric to its values over ``users`` (evaluated user indices, ascending);
    ``top_items`` holds those users' top-k recommended item indices (-1 pads short lists).
    """

    name: str
    component: str
    metrics: dict[str, float]
    validation: dict[str, float]
    train_seconds: float
    eval_seconds: float
    n_parameters: int
    fit_info: dict[str, Any]
    artifact: str | None
    per_user: dict[str, np.ndarray] = field(default_factory=dict)
    users: np.ndarray | None = None
    top_items: np.ndarray | None = None

    def row(self) -> dict[str, Any]:
        return {
            **self.metrics,
            "train_seconds": round(self.train_seconds, 3),
            "seconds_per_epoch": self.fit_info.get("seconds_per_epoch"),
            "eval_seconds": round(self.eval_seconds, 3),
            "n_parameters": self.n_parameters,
            "component": self.component,
            "validation": self.validation,
            "fit_info": self.fit_info,
            "artifact": self.artifact,
        }


@dataclass
class SuiteResult:
    """A suite's outcome: protocol, dataset summary and one :class:`ModelResult` per model.

    ``metrics`` describes each metric of the protocol (``per_user``, ``higher_is_better``); ``users`` has one row
    per evaluated user (index, id, activity, user attributes) and ``item_counts`` the history interactions per
    item: together with the models' per-user values and top-k lists, what a report needs. ``report`` is the
    analysed report (:func:`cinesync.evaluation.report.build_report`) once one was written.
    """

    name: str
    protocol: dict[str, Any]
    dataset: dict[str, Any]
    results: dict[str, ModelResult]
    seconds: float
    metrics: dict[str, dict[str, bool]] = field(default_factory=dict)
    users: pd.DataFrame | None = None
    item_counts: np.ndarray | None = None
    report: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "suite": self.name,
            "protocol": self.protocol,
            "dataset": self.dataset,
            "results": {name: result.row() for name, result in self.results.items()},
            "metrics": self.metrics,
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


@dataclass
class ValidationFit:
    """A model fitted on the training split (early-stopped on validation where it is iterative)."""

    model: Recommender
    metrics: dict[str, float]
    fit_info: dict[str, Any]
    seconds: float


def fit_on_train(
    spec: ModelSpec,
    split: Split,
    protocol: EvaluationProtocol,
    *,
    progress: bool = True,
    context: dict[str, Any] | None = None,
) -> ValidationFit:
    """Step 1 of the protocol for one model: fit on *train* (early stopping on *validation* for iterative
    models) and measure the protocol's metrics on validation."""
    from cinesync import registry
    from cinesync.evaluation import evaluate
    from cinesync.train.trainer import TrainerConfig

    assert spec.component is not None and split.valid is not None
    trainer = TrainerConfig.model_validate({"progress": progress, **spec.training})
    model: Recommender = registry.build("recommender", spec.component, **spec.params)
    started = time.perf_counter()
    if model.iterative:
        model.fit(split.train, validation=split.valid, trainer=trainer)
    else:
        model.fit(split.train)
    seconds = time.perf_counter() - started
    metrics = evaluate(
        model, split.valid, metrics=protocol.metrics, batch_size=protocol.batch_size, context=context
    ).metrics
    return ValidationFit(model=model, metrics=metrics, fit_info=dict(model.fit_info), seconds=seconds)


def refit_and_test(
    spec: ModelSpec,
    split: Split,
    protocol: EvaluationProtocol,
    validation: ValidationFit | None,
    *,
    progress: bool = True,
    context: dict[str, Any] | None = None,
    refitted: tuple[Recommender, float] | None = None,
) -> tuple[Recommender, ModelResult]:
    """Step 2 of the protocol for one model: refit on *train + validation* (iterative models for the best epoch
    count of ``validation``), or keep ``validation``'s model when ``refit = false``; then evaluate on *test*.

    ``refitted`` is a model already refitted under this protocol and the seconds it took (a cached one)."""
    from cinesync import registry
    from cinesync.train.trainer import TrainerConfig

    assert spec.component is not None
    trainer = TrainerConfig.model_validate({"progress": progress, **spec.training})
    fit_info: dict[str, Any] = {}
    train_seconds = 0.0
    if validation is not None:
        train_seconds = validation.seconds
        if validation.model.iterative:
            fit_info["validation_phase"] = dict(validation.fit_info)
    if validation is not None and not protocol.refit:
        model = validation.model
    elif refitted is not None:
        model, seconds = refitted
        train_seconds += seconds
    else:
        refit_trainer = trainer
        best_epoch = fit_info.get("validation_phase", {}).get("best_epoch")
        if best_epoch:
            refit_trainer = trainer.model_copy(
                update={"epochs": int(best_epoch), "early_stopping_metric": None}
            )
        if validation is not None:
            # The refit keeps its checkpoints and log apart, so it never resumes from the validation phase's.
            refit_trainer = refit_trainer.model_copy(
                update={
                    key: str(Path(getattr(refit_trainer, key)) / "refit")
                    for key in ("checkpoint_dir", "log_dir")
                    if getattr(refit_trainer, key) is not None
                }
            )
        model = registry.build("recommender", spec.component, **spec.params)
        started = time.perf_counter()
        model.fit(split.train_valid if protocol.refit else split.train, trainer=refit_trainer)
        train_seconds += time.perf_counter() - started
    fit_info.update(model.fit_info)
    model.fit_info = fit_info
    result = evaluate_on_test(
        model,
        split,
        protocol,
        context,
        name=spec.display_name,
        component=spec.component,
        validation=validation.metrics if validation is not None else {},
        train_seconds=train_seconds,
        fit_info=fit_info,
    )
    return model, result


def evaluate_on_test(
    model: Recommender,
    split: Split,
    protocol: EvaluationProtocol,
    context: dict[str, Any] | None,
    *,
    name: str,
    component: str,
    validation: dict[str, float],
    train_seconds: float,
    fit_info: dict[str, Any],
) -> ModelResult:
    """Evaluate a fitted ``model`` on the test split under ``protocol``, keeping its per-user values and top-k
    lists (what reports need)."""
    from cinesync.evaluation import evaluate

    recorder = TopItemsRecorder(k=protocol.fairness.exposure_k)
    evaluation = evaluate(
        model,
        split.test,
        metrics=[*protocol.metrics, recorder],
        batch_size=protocol.batch_size,
        context=context,
    )
    evaluation.metrics.pop(recorder.name)
    return ModelResult(
        name=name,
        component=component,
        metrics=evaluation.metrics,
        validation=validation,
        train_seconds=train_seconds,
        eval_seconds=evaluation.seconds,
        n_parameters=model.n_parameters(),
        fit_info=fit_info,
        artifact=None,
        per_user=dict(evaluation.per_user),
        users=evaluation.users,
        top_items=recorder.items,
    )


def train_and_evaluate(
    spec: ModelSpec,
    split: Split,
    protocol: EvaluationProtocol,
    *,
    progress: bool = True,
    context: dict[str, Any] | None = None,
) -> tuple[Recommender, ModelResult]:
    """Fit one model under the protocol and evaluate it on the test split.

    Iterative models are first fitted on train with early stopping on validation (:func:`fit_on_train`);
    every model is then refitted and tested (:func:`refit_and_test`). ``context`` is passed to the evaluator
    (e.g. ``{"outcomes": log}`` for business metrics).
    """
    from cinesync import registry

    assert spec.component is not None
    validation = None
    iterative = bool(getattr(registry.load("recommender", spec.component), "iterative", False))
    if split.valid is not None and (iterative or not protocol.refit):
        validation = fit_on_train(spec, split, protocol, progress=progress, context=context)
    return refit_and_test(spec, split, protocol, validation, progress=progress, context=context)


def run_suite(
    manifest: SuiteManifest,
    *,
    source: str = "<suite>",
    data_dir: str | os.PathLike[str] | None = None,
    output: str | os.PathLike[str] | None = None,
    progress: bool = True,
    on_result: Callable[[ModelResult], None] | None = None,
) -> SuiteResult:
    """Run every model of ``manifest``. With ``output``: artifacts, ``results.json``, the per-user and top-k
    files of :func:`save_run` and the report (``report.json``/``.md``/``.html``) go under it.

    ``on_result(result)`` is called after each model (the CLI prints progress with it). A fairness attribute
    the dataset lacks is an error before any model trains.
    """
    from cinesync.hooks import plugin_manager
    from cinesync.manifest import check_components

    check_components(manifest, source)
    started = time.perf_counter()
    protocol = manifest.evaluation
    split = prepare_data(protocol, data_dir)
    _check_requirements(manifest, split.train, source)
    context = evaluation_context(protocol, split, source)
    history = split.train_valid if protocol.refit else split.train
    users = evaluated_users(split.test, history)
    _check_fairness_attributes(protocol, users, source)
    results: dict[str, ModelResult] = {}
    for spec in manifest.models:
        model, result = train_and_evaluate(spec, split, protocol, progress=progress, context=context)
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
        metrics=describe_metrics(protocol.metrics),
        users=users,
        item_counts=history.item_counts(),
    )
    if output is not None:
        from cinesync.evaluation.report import build_report, write_report

        save_run(suite, output)
        suite.report = build_report(suite)
        write_report(suite.report, Path(output))
    return suite


def evaluated_users(test: Dataset, history: Dataset) -> pd.DataFrame:
    """One row per user with test interactions, by ascending index (the evaluator's order): ``user`` index,
    ``id`` (the source's id, as text), ``activity`` (interactions in ``history``) and every user attribute of
    the dataset (``age``, ``gender``, ...)."""
    import pandas as pd

    indices = np.unique(test.interactions["user"].to_numpy(np.int64))
    table = pd.DataFrame(
        {
            "user": indices,
            "id": [str(external) for external in test.users.lookup(indices)],
            "activity": history.user_counts()[indices].astype(np.int64),
        }
    )
    attributes = test.user_attributes
    if attributes is not None:
        kept = attributes.drop(columns=[c for c in ("user_id", "user", "id", "activity") if c in attributes])
        table = pd.concat([table, kept.iloc[indices].reset_index(drop=True)], axis=1)
    return table


def evaluation_context(protocol: EvaluationProtocol, split: Split, source: str) -> dict[str, Any]:
    """What the evaluator needs beyond the split: the outcome log business metrics read, if any.

    ``outcomes = "generated"`` simulates a log over the whole dataset with
    :func:`~cinesync.data.outcomes.generate_outcome_log` (seeded by the split's seed); any other value is a
    CSV or Parquet log, relative to the manifest's folder.
    """
    import pandas as pd

    from cinesync.data.outcomes import generate_outcome_log, load_outcome_log

    if protocol.outcomes is None:
        return {}
    everything = split.train_valid.with_interactions(
        pd.concat([split.train_valid.interactions, split.test.interactions], ignore_index=True)
    )
    if protocol.outcomes == "generated":
        return {"outcomes": generate_outcome_log(everything, seed=protocol.split.seed)}
    path = Path(protocol.outcomes)
    if not path.is_absolute() and not source.startswith("<"):
        path = Path(source).parent / path
    return {"outcomes": load_outcome_log(path, everything)}


def describe_metrics(specs: Sequence[Any]) -> dict[str, dict[str, bool]]:
    """``{name: {"per_user": ..., "higher_is_better": ...}}`` for each metric spec, from the metric plugins."""
    from cinesync.evaluation.metrics import parse_metric

    described = {}
    for spec in specs:
        metric = parse_metric(spec)
        described[metric.name] = {"per_user": metric.per_user, "higher_is_better": metric.higher_is_better}
    return described


def _check_fairness_attributes(protocol: EvaluationProtocol, users: pd.DataFrame, source: str) -> None:
    missing = [a for a in protocol.fairness.attributes if a not in users.columns]
    if missing:
        available = ", ".join(c for c in users.columns if c not in ("user", "id"))
        raise CineSyncError(
            f"{source}: evaluation.fairness.attributes names {', '.join(missing)}, which dataset "
            f"{protocol.dataset.name!r} does not provide (available: {available})"
        )


def _file_name(name: str, taken: set[str]) -> str:
    """A file name for model ``name``: its own when safe, else a slug; unique among ``taken``."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or "model"
    candidate, suffix = stem, 1
    while candidate.lower() in taken:
        suffix += 1
        candidate = f"{stem}-{suffix}"
    taken.add(candidate.lower())
    return f"{candidate}.safetensors"


def save_run(suite: SuiteResult, output: str | os.PathLike[str]) -> None:
    """Write ``results.json`` and the per-user, top-k, user and item files of the module docstring."""
    from safetensors.numpy import save_file

    root = Path(output)
    payload = suite.to_json()
    payload["evaluation_format"] = RUN_FORMAT
    taken: set[str] = set()
    for name, result in suite.results.items():
        if result.users is None or result.top_items is None:
            raise CineSyncError(f"model {name!r} has no per-user results to save")
        relative = f"evaluation/models/{_file_name(name, taken)}"
        tensors: dict[str, np.ndarray] = {
            "users": np.ascontiguousarray(result.users, dtype=np.int64),
            "top_items": np.ascontiguousarray(result.top_items, dtype=np.int32),
            **{
                f"per_user/{metric}": np.ascontiguousarray(values, dtype=np.float64)
                for metric, values in result.per_user.items()
            },
        }
        _atomic(root / relative, partial(save_file, tensors))
        payload["results"][name]["per_user_file"] = relative
    if suite.item_counts is not None:
        counts = {"item_counts": np.ascontiguousarray(suite.item_counts, dtype=np.int64)}
        _atomic(root / "evaluation/items.safetensors", partial(save_file, counts))
    if suite.users is not None:
        users = suite.users
        _atomic(root / "evaluation/users.parquet", lambda path: users.to_parquet(path, index=False))
    write_json(root / "results.json", payload)


def load_run(run_dir: str | os.PathLike[str]) -> SuiteResult:
    """Read a run directory written by :func:`save_run` back into a :class:`SuiteResult` (artifacts stay on
    disk). Raises :class:`~cinesync.errors.CineSyncError` naming the missing file when the run lacks one
    (runs of cinesync before 0.2 kept no per-user values: run the suite again)."""
    import pandas as pd
    from safetensors.numpy import load_file

    root = Path(run_dir)
    results_path = root / "results.json"
    if not results_path.is_file():
        raise CineSyncError(f"{root}: no results.json; is this the --output directory of 'cinesync run'?")
    payload = json.loads(results_path.read_text(encoding="utf-8"))
    if payload.get("evaluation_format") != RUN_FORMAT:
        raise CineSyncError(
            f"{root}: the run keeps no per-user results (format {payload.get('evaluation_format')!r}, expected "
            f"{RUN_FORMAT}); run the suite again with this cinesync to report on it"
        )
    metrics: dict[str, dict[str, bool]] = payload["metrics"]
    results: dict[str, ModelResult] = {}
    for name, row in payload["results"].items():
        path = root / row["per_user_file"]
        if not path.is_file():
            raise CineSyncError(f"{root}: {row['per_user_file']} (per-user results of {name!r}) is missing")
        tensors = load_file(str(path))
        results[name] = ModelResult(
            name=name,
            component=row.get("component", name),
            metrics={m: float(row[m]) for m in metrics if m in row},
            validation=row.get("validation", {}),
            train_seconds=float(row.get("train_seconds", 0.0)),
            eval_seconds=float(row.get("eval_seconds", 0.0)),
            n_parameters=int(row.get("n_parameters", 0)),
            fit_info=row.get("fit_info", {}),
            artifact=row.get("artifact"),
            per_user={
                k.removeprefix("per_user/"): v for k, v in tensors.items() if k.startswith("per_user/")
            },
            users=tensors["users"],
            top_items=tensors["top_items"],
        )
    for required in ("evaluation/users.parquet", "evaluation/items.safetensors"):
        if not (root / required).is_file():
            raise CineSyncError(f"{root}: {required} is missing; run the suite again to report on it")
    return SuiteResult(
        name=payload["suite"],
        protocol=payload["protocol"],
        dataset=payload["dataset"],
        results=results,
        seconds=float(payload.get("seconds", 0.0)),
        metrics=metrics,
        users=pd.read_parquet(root / "evaluation/users.parquet"),
        item_counts=load_file(str(root / "evaluation/items.safetensors"))["item_counts"],
    )


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
    _atomic(path, lambda staging: staging.write_text(json.dumps(payload, indent=2, default=str), "utf-8"))


def write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically (temporary file + rename)."""
    _atomic(path, lambda staging: staging.write_text(text, encoding="utf-8"))


def _atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write`` on a temporary file beside ``path``, then rename it over ``path``: readers never see
    a half-written file, and a failed write leaves the old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(staging)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
