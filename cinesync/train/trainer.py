"""The training loop of gradient-trained recommenders (``TorchRecommender``).

:class:`Trainer` runs epochs of mini-batches, logs one line per epoch, evaluates on validation data every
``eval_every`` epochs and early-stops on one metric, keeping the best weights. What varies between training
strategies goes through two extension points: the overridable steps of :class:`Trainer` (``make_optimizer``,
``training_step``, ``train_epoch``, ``validation_score``) and :class:`Callback` objects called at the start,
after each epoch and at the end. Early stopping is itself a callback (:class:`EarlyStopping`).

This module imports torch only inside the methods that train, so importing :class:`TrainerConfig` (as
manifests do) stays cheap.
"""

from __future__ import annotations

import logging
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from cinesync.errors import CineSyncError
from cinesync.interfaces import ComponentConfig

if TYPE_CHECKING:
    import torch

    from cinesync.data.dataset import Dataset
    from cinesync.train.torch_model import TorchRecommender

logger = logging.getLogger("cinesync.train")


class TrainerConfig(ComponentConfig):
    """How a model is optimised: everything here is independent of the model's own hyper-parameters."""

    epochs: int = Field(50, ge=1, description="Maximum number of passes over the training data.")
    batch_size: int = Field(1024, ge=1, description="Training examples per mini-batch.")
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0, description="The optimizer's decay on every parameter.")
    optimizer: Literal["adam", "adamw", "sgd", "adagrad"] = "adam"
    early_stopping_metric: str | None = Field(
        "ndcg@10", description="Metric evaluated on the validation data; None trains for exactly `epochs`."
    )
    patience: int = Field(5, ge=1, description="Evaluations without improvement before training stops.")
    eval_every: int = Field(1, ge=1, description="Epochs between two evaluations on the validation data.")
    seed: int = 0
    device: Literal["cpu", "cuda", "auto"] = Field(
        "auto", description="'auto' uses CUDA when it is available."
    )
    progress: bool = Field(True, description="Show a progress bar on stderr.")
    max_seconds: float | None = Field(
        None, gt=0, description="Stop after the epoch in which this time ran out."
    )


@dataclass
class TrainingReport:
    """What a call to :meth:`Trainer.fit` did.

    ``history`` holds one dict per epoch: ``epoch`` (1-based), ``loss`` (mean over the epoch's examples),
    ``metric`` (validation score, None when not evaluated that epoch), ``seconds`` (validation included),
    ``examples_per_second`` (training only) and ``peak_memory_mb`` (process peak RSS on CPU, peak allocated
    memory on CUDA). ``best_epoch`` is the epoch whose weights the model holds at the end: the best evaluated
    one under early stopping, else the last.
    """

    epochs_run: int = 0
    best_epoch: int = 0
    best_score: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


class Callback:
    """Hooks :class:`Trainer` calls during :meth:`Trainer.fit`; override the ones you need.

    A callback may set ``trainer.stop_training = True`` to end training after the current epoch.
    """

    def on_train_start(self, trainer: Trainer, model: TorchRecommender) -> None:
        """Called once the module is on its device and the optimizer exists, before the first epoch."""

    def on_epoch_end(self, trainer: Trainer, model: TorchRecommender, record: dict[str, Any]) -> None:
        """Called after each epoch with that epoch's history record."""

    def on_train_end(self, trainer: Trainer, model: TorchRecommender, report: TrainingReport) -> None:
        """Called after the last epoch; may change the model's weights and the report."""


class PluginHooks(Callback):
    """Fires the ``cinesync_train_epoch_end`` hook of installed hook plugins after each epoch."""

    def on_epoch_end(self, trainer: Trainer, model: TorchRecommender, record: dict[str, Any]) -> None:
        from cinesync.hooks import plugin_manager

        logs = {k: float(v) for k, v in record.items() if isinstance(v, int | float) and k != "epoch"}
        plugin_manager().hook.cinesync_train_epoch_end(
            model_name=type(model).__name__, epoch=int(record["epoch"]), logs=logs
        )


class EarlyStopping(Callback):
    """Keeps the best-scoring evaluation's weights; stops after ``patience`` evaluations without a gain.

    Epochs whose record has no ``metric`` (not evaluated) are ignored. At the end the best weights are loaded
    back into the module and the report's ``best_epoch``/``best_score`` point at them.
    """

    def __init__(self, *, patience: int, higher_is_better: bool) -> None:
        self.patience = patience
        self.higher_is_better = higher_is_better
        self.best_epoch: int | None = None
        self.best_score: float | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.evaluations_without_improvement = 0

    def improves(self, score: float) -> bool:
        if self.best_score is None:
            return True
        return score > self.best_score if self.higher_is_better else score < self.best_score

    def on_epoch_end(self, trainer: Trainer, model: TorchRecommender, record: dict[str, Any]) -> None:
        score = record["metric"]
        if score is None:
            return
        if self.improves(score):
            self.best_epoch, self.best_score = record["epoch"], score
            self.best_state = {k: v.detach().clone() for k, v in model.trained_module.state_dict().items()}
            self.evaluations_without_improvement = 0
            return
        self.evaluations_without_improvement += 1
        if self.evaluations_without_improvement >= self.patience:
            logger.info(
                "early stopping after epoch %d: no improvement in %d evaluations (best epoch %d)",
                record["epoch"],
                self.patience,
                self.best_epoch,
            )
            trainer.stop_training = True

    def on_train_end(self, trainer: Trainer, model: TorchRecommender, report: TrainingReport) -> None:
        if self.best_state is None:
            return
        model.trained_module.load_state_dict(self.best_state)
        report.best_epoch = int(self.best_epoch or 0)
        report.best_score = self.best_score


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (CUDA included)."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(requested: str) -> torch.device:
    """The torch device for a :attr:`TrainerConfig.device` value."""
    import torch

    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise CineSyncError(
            "the trainer's device is 'cuda' but torch sees no CUDA device; use device='auto' or 'cpu'"
        )
    return torch.device(requested)


def metric_higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` (written ``id@k`` or ``id``) is better, from the metric plugin."""
    from cinesync.evaluation.metrics import parse_metric

    return bool(parse_metric(metric).higher_is_better)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: allocated tensors on CUDA, the process's maximum resident set size on CPU."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # macOS reports bytes, Linux KiB


class Trainer:
    """Trains a :class:`~cinesync.train.torch_model.TorchRecommender` whose ``module`` is already built.

    ``fit`` seeds the generators, moves the module to the device, and runs up to ``epochs`` epochs. With
    validation data and an ``early_stopping_metric`` it evaluates every ``eval_every`` epochs through
    :func:`cinesync.evaluation.evaluator.evaluate` (the model's training items excluded), stops after
    ``patience`` evaluations without improvement and restores the best weights. ``max_seconds`` ends training
    after the epoch in which the time ran out. The model's ``fit_info`` records ``epochs_run``,
    ``best_epoch``, ``best_validation`` and ``training_seconds``.
    """

    def __init__(
        self, config: TrainerConfig | None = None, *, callbacks: list[Callback] | None = None
    ) -> None:
        self.config = config if config is not None else TrainerConfig()
        self.callbacks: list[Callback] = list(callbacks or [])
        self.stop_training = False
        self.device: torch.device | None = None
        self.optimizer: torch.optim.Optimizer | None = None

    # -- extension points ----------------------------------------------------------------------------------
    def make_optimizer(self, module: torch.nn.Module) -> torch.optim.Optimizer:
        import torch

        config = self.config
        optimizers: dict[str, Callable[..., torch.optim.Optimizer]] = {
            "adam": torch.optim.Adam,
            "adamw": torch.optim.AdamW,
            "sgd": torch.optim.SGD,
            "adagrad": torch.optim.Adagrad,
        }
        return optimizers[config.optimizer](
            module.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )

    def training_step(self, model: TorchRecommender, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One optimisation step on ``batch``; returns the (detached) loss."""
        assert self.optimizer is not None
        self.optimizer.zero_grad(set_to_none=True)
        loss = model.loss(batch)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def train_epoch(
        self, model: TorchRecommender, train: Dataset, generator: torch.Generator
    ) -> tuple[float, int]:
        """One pass over ``model.training_batches``: returns (mean loss per example, number of examples)."""
        import torch

        assert self.device is not None
        model.trained_module.train()
        total = torch.zeros((), device=self.device)
        examples = 0
        for batch in model.training_batches(train, self.config.batch_size, generator):
            on_device = {name: tensor.to(self.device, non_blocking=True) for name, tensor in batch.items()}
            size = len(next(iter(on_device.values())))
            # Accumulate on the device: calling .item() every batch would synchronise with the GPU.
            total += self.training_step(model, on_device) * size
            examples += size
        mean = total.item() / max(examples, 1)
        if not np.isfinite(mean):
            raise CineSyncError(
                f"training {type(model).__name__} diverged (loss {mean}); lower the learning rate "
                f"(now {self.config.learning_rate}) or raise the regularisation"
            )
        return mean, examples

    def validation_score(self, model: TorchRecommender, validation: Dataset) -> float:
        """The early-stopping metric of ``model`` on ``validation``, the model's training items excluded."""
        import torch

        from cinesync.evaluation.evaluator import evaluate

        metric = self.config.early_stopping_metric
        assert metric is not None
        model.trained_module.eval()
        with torch.no_grad():
            result = evaluate(model, validation, metrics=(metric,))
        return float(result.metrics[metric])

    # -- the loop ------------------------------------------------------------------------------------------
    def fit(
        self, model: TorchRecommender, train: Dataset, validation: Dataset | None = None
    ) -> TrainingReport:
        """Train ``model`` on ``train``, early-stopping on ``validation`` when given."""
        import torch

        config = self.config
        seed_everything(config.seed)
        generator = torch.Generator().manual_seed(config.seed)
        self.device = resolve_device(config.device)
        module = model.trained_module.to(self.device)
        self.optimizer = self.make_optimizer(module)
        self.stop_training = False
        callbacks = [*self.callbacks, PluginHooks()]
        metric = config.early_stopping_metric if validation is not None else None
        if metric is not None:
            callbacks.append(
                EarlyStopping(patience=config.patience, higher_is_better=metric_higher_is_better(metric))
            )
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

        report = TrainingReport()
        started = time.perf_counter()
        for callback in callbacks:
            callback.on_train_start(self, model)
        with self._progress() as progress:
            task = progress.add_task(type(model).__name__, total=config.epochs, status="")
            for epoch in range(1, config.epochs + 1):
                epoch_started = time.perf_counter()
                loss, examples = self.train_epoch(model, train, generator)
                training_seconds = time.perf_counter() - epoch_started
                score = None
                if metric is not None and epoch % config.eval_every == 0:
                    assert validation is not None
                    score = self.validation_score(model, validation)
                seconds = time.perf_counter() - epoch_started
                record = {
                    "epoch": epoch,
                    "loss": loss,
                    "metric": score,
                    "seconds": seconds,
                    "examples_per_second": examples / max(training_seconds, 1e-9),
                    "peak_memory_mb": peak_memory_mb(self.device),
                }
                report.history.append(record)
                report.epochs_run = report.best_epoch = epoch
                self._log_epoch(record, metric)
                progress.update(
                    task,
                    advance=1,
                    status=f"loss {loss:.4f}" + ("" if score is None else f" {metric} {score:.4f}"),
                )
                for callback in callbacks:
                    callback.on_epoch_end(self, model, record)
                if config.max_seconds is not None and time.perf_counter() - started >= config.max_seconds:
                    logger.info(
                        "stopping after epoch %d: the time limit of %.0fs ran out", epoch, config.max_seconds
                    )
                    self.stop_training = True
                if self.stop_training:
                    break
        for callback in callbacks:
            callback.on_train_end(self, model, report)
        module.eval()
        report.seconds = time.perf_counter() - started
        model.fit_info.update(
            epochs_run=report.epochs_run,
            best_epoch=report.best_epoch,
            best_validation=report.best_score,
            training_seconds=round(report.seconds, 3),
        )
        return report

    def _log_epoch(self, record: dict[str, Any], metric: str | None) -> None:
        assert self.optimizer is not None
        score = "" if record["metric"] is None else f" {metric} {record['metric']:.4f}"
        logger.info(
            "epoch %d/%d loss %.4f%s lr %.3g %.2fs %.0f ex/s peak %.0f MB",
            record["epoch"],
            self.config.epochs,
            record["loss"],
            score,
            self.optimizer.param_groups[0]["lr"],
            record["seconds"],
            record["examples_per_second"],
            record["peak_memory_mb"],
        )

    def _progress(self) -> Any:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("epochs {task.fields[status]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            disable=not self.config.progress,
            transient=True,
        )
