"""The training loop of gradient-trained recommenders (``TorchRecommender``).

:class:`Trainer` runs epochs of mini-batches, logs one record per epoch, evaluates on validation data every
``eval_every`` epochs and early-stops on one declared metric, keeping the best weights. Everything it does is
set by :class:`TrainerConfig`, which is also the schema of a manifest's ``[training]`` table; each concern has
its own module:

* :mod:`cinesync.train.optim`: decoupled weight decay that spares embeddings and biases, layer-wise
  learning-rate decay by named layer groups, warm-up + cosine/linear schedules;
* :mod:`cinesync.train.precision`: mixed precision (autocast, gradient scaling for float16);
* :mod:`cinesync.train.curriculum`: which examples each epoch samples, easiest first;
* :mod:`cinesync.train.multitask`: task losses combined with learned uncertainty weights;
* :mod:`cinesync.train.checkpoint`: atomic safetensors/JSON checkpoints and exact resumption;
* :mod:`cinesync.train.distributed`: data parallelism across ``torchrun`` processes.

What varies between training strategies goes through the overridable steps of :class:`Trainer`
(``make_optimizer``, ``training_step``, ``train_epoch``, ``validation_score``) and :class:`Callback` objects.
Early stopping is itself a callback (:class:`EarlyStopping`).

How examples are sampled: a model that implements the example protocol of
:class:`~cinesync.train.torch_model.TorchRecommender` (``training_examples`` + ``collate``) lets the trainer
choose each epoch's examples: a seeded permutation, a curriculum subset, a shard per process. A model that only
implements ``training_batches`` still trains, without curriculum or data parallelism.

This module imports torch only inside the methods that train, so importing :class:`TrainerConfig` (as
manifests do) stays cheap.
"""

from __future__ import annotations

import json
import logging
import math
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, model_validator

from cinesync.errors import CineSyncError
from cinesync.interfaces import ComponentConfig

if TYPE_CHECKING:
    import torch

    from cinesync.data.dataset import Dataset
    from cinesync.train.checkpoint import Checkpoint
    from cinesync.train.distributed import World
    from cinesync.train.multitask import TaskWeighting
    from cinesync.train.precision import Precision
    from cinesync.train.torch_model import TorchRecommender

logger = logging.getLogger("cinesync.train")

Difficulty = Literal["item_popularity", "sequence_length", "loss"]
#: Name of the JSON-lines training log, written next to the checkpoints (or in ``log_dir``).
TRAINING_LOG = "training_log.jsonl"


class CurriculumConfig(ComponentConfig):
    """Which examples each epoch samples from: the ``pacing`` fraction of them, easiest first.

    See :mod:`cinesync.train.curriculum` (Bengio et al., ICML 2009).
    """

    difficulty: Difficulty = Field(
        description="How hard an example is: 'item_popularity' (rare items are hard), 'sequence_length' "
        "(long histories are hard) or 'loss' (the model's current loss, recomputed every epoch)."
    )
    pacing: Literal["linear", "root", "step"] = Field(
        "linear", description="How the admitted fraction grows from start_fraction to 1."
    )
    start_fraction: float = Field(0.3, gt=0, le=1, description="Fraction of the examples epoch 1 uses.")
    full_at_epoch: int = Field(5, ge=1, description="First epoch that samples from every example.")


class TaskConfig(ComponentConfig):
    """One task of a multi-task model: a head it exposes, how its loss is weighted, what measures it.

    See :mod:`cinesync.train.multitask` (Kendall, Gal & Cipolla, CVPR 2018).
    """

    name: str = Field(description="A task head of the model (its task_heads()).")
    loss: str | None = Field(
        None, description="The loss the head computes ('bpr', 'mse', ...); checked against the model."
    )
    weight: float | Literal["uncertainty"] = Field(
        "uncertainty", description="A fixed weight, or 'uncertainty' to learn it (Kendall et al. 2018)."
    )
    metric: str | None = Field(
        None, description="A validation metric of this task ('ndcg@10', 'rmse'), logged at each evaluation."
    )


class TrainerConfig(ComponentConfig):
    """How a model is optimised: everything here is independent of the model's own hyper-parameters."""

    epochs: int = Field(50, ge=1, description="Maximum number of passes over the training data.")
    batch_size: int = Field(
        1024, ge=1, description="Training examples per mini-batch; with several processes, the global batch."
    )
    learning_rate: float = Field(1e-3, gt=0)
    optimizer: Literal["adam", "adamw", "sgd", "adagrad"] = Field(
        "adam", description="'adamw' decays weights decoupled from the gradient (Loshchilov & Hutter 2019)."
    )
    weight_decay: float = Field(
        0.0, ge=0, description="Weight decay of the parameters outside the no_decay classes."
    )
    no_decay: list[str] = Field(
        default_factory=lambda: ["embeddings", "biases"],
        description="Parameters spared weight decay: 'embeddings' (nn.Embedding tables), 'biases' (biases and "
        "other 1-d parameters such as norm scales), or parameter-name prefixes.",
    )
    layer_lr_decay: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Layer-wise learning-rate decay: layer group i of n (input to output) learns at "
        "learning_rate * layer_lr_decay^(n-1-i).",
    )
    schedule: Literal["constant", "cosine", "linear"] = Field(
        "constant", description="Learning-rate shape after warm-up, per optimizer step."
    )
    warmup_steps: int | None = Field(
        None, ge=0, description="Optimizer steps of linear warm-up; overrides warmup_ratio."
    )
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Warm-up as a fraction of all optimizer steps.")
    gradient_accumulation: int = Field(
        1, ge=1, description="Mini-batches whose gradients are averaged into one optimizer step."
    )
    clip_grad_norm: float | None = Field(
        None, gt=0, description="Clip the global gradient norm to this value before each step."
    )
    mixed_precision: Literal["off", "bf16", "fp16", "auto"] = Field(
        "off",
        description="Autocast the forward pass: 'bf16', 'fp16' (with gradient scaling), 'auto' (bf16 where "
        "the hardware supports it, else fp16 on CUDA and off on CPU) or 'off'.",
    )
    early_stopping_metric: str | None = Field(
        "ndcg@10", description="Metric evaluated on the validation data; None trains for exactly `epochs`."
    )
    early_stopping_direction: Literal["auto", "higher", "lower"] = Field(
        "auto", description="Whether a larger metric is better; 'auto' asks the metric plugin."
    )
    patience: int = Field(5, ge=1, description="Evaluations without improvement before training stops.")
    eval_every: int = Field(1, ge=1, description="Epochs between two evaluations on the validation data.")
    curriculum: CurriculumConfig | None = Field(None, description="Easy-to-hard sampling of examples.")
    tasks: list[TaskConfig] = Field(
        default_factory=list, description="Task heads of a multi-task model and how their losses combine."
    )
    checkpoint_dir: str | None = Field(
        None, description="Where checkpoints (each epoch, every N steps, best) and the training log go."
    )
    checkpoint_every_steps: int | None = Field(
        None, ge=1, description="Also checkpoint every this many optimizer steps, mid-epoch included."
    )
    resume: bool = Field(False, description="Continue from the latest checkpoint in checkpoint_dir, if any.")
    log_dir: str | None = Field(
        None, description=f"Where {TRAINING_LOG} goes when it should not be next to the checkpoints."
    )
    seed: int = 0
    device: Literal["cpu", "cuda", "auto"] = Field(
        "auto", description="'auto' uses CUDA when it is available."
    )
    progress: bool = Field(True, description="Show a progress bar with examples/s and ETA on stderr.")
    max_seconds: float | None = Field(
        None, gt=0, description="Stop after the epoch in which this time ran out."
    )

    @model_validator(mode="after")
    def _consistent(self) -> TrainerConfig:
        if self.resume and self.checkpoint_dir is None:
            raise ValueError("resume = true needs a checkpoint_dir to resume from")
        if self.checkpoint_every_steps is not None and self.checkpoint_dir is None:
            raise ValueError("checkpoint_every_steps needs a checkpoint_dir to write to")
        if self.warmup_steps is not None and self.warmup_ratio:
            raise ValueError("give warmup_steps or warmup_ratio, not both")
        names = [task.name for task in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}")
        return self


@dataclass
class TrainingReport:
    """What a call to :meth:`Trainer.fit` did.

    ``history`` holds one dict per epoch: ``epoch`` (1-based), ``loss`` (mean over the epoch's examples of the
    combined loss), ``metric`` (validation score, None when not evaluated that epoch), ``seconds`` (validation
    included), ``examples`` and ``examples_per_second`` (training only, all processes), ``peak_memory_mb``
    (process peak RSS on CPU, peak allocated memory on CUDA), ``learning_rate`` (the configured rate times the
    schedule at the epoch's end), ``step`` (optimizer steps so far), ``fraction`` (share of the examples the
    curriculum admitted) and, for multi-task models, ``task_losses``, ``task_weights`` and ``task_metrics``
    (dicts by task). ``best_epoch`` is the epoch whose weights the model holds at the end: the best evaluated
    one under early stopping, else the last. ``resumed_from`` is the optimizer step a resumed run began at.
    """

    epochs_run: int = 0
    best_epoch: int = 0
    best_score: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int | None = None


class Callback:
    """Hooks :class:`Trainer` calls during :meth:`Trainer.fit`; override the ones you need.

    A callback may set ``trainer.stop_training = True`` to end training after the current epoch.
    """

    def on_train_start(self, trainer: Trainer, model: TorchRecommender) -> None:
        """Called once the module is on its device and the optimizer exists, before the first epoch."""

    def on_step_end(self, trainer: Trainer, model: TorchRecommender, step: int) -> None:
        """Called after optimizer step ``step`` (1-based, counted over the whole run) and its checkpoint."""

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

    def state(self) -> dict[str, Any]:
        """The JSON-compatible part of the state (the best weights live in the best checkpoint)."""
        return {
            "best_epoch": self.best_epoch,
            "best_score": self.best_score,
            "evaluations_without_improvement": self.evaluations_without_improvement,
        }

    def restore(self, state: dict[str, Any], best_state: dict[str, torch.Tensor] | None) -> None:
        self.best_epoch, self.best_score = state["best_epoch"], state["best_score"]
        self.evaluations_without_improvement = int(state["evaluations_without_improvement"])
        self.best_state = best_state


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


def is_metric_plugin(metric: str) -> bool:
    """Whether ``metric`` names an installed metric plugin (else it can only be a model's task metric)."""
    from cinesync.evaluation.metrics import parse_metric

    try:
        parse_metric(metric)
    except CineSyncError:
        return False
    return True


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: allocated tensors on CUDA, the process's maximum resident set size on CPU."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # macOS reports bytes, Linux KiB


@dataclass
class Position:
    """Where training stands: the 1-based ``epoch``, the next ``batch`` within it, optimizer ``step`` so far."""

    epoch: int = 1
    batch: int = 0
    step: int = 0


@dataclass
class EpochTotals:
    """Running sums of one epoch on this process: losses weighted by rows, rows, and per-task losses."""

    loss: float = 0.0
    examples: int = 0
    tasks: dict[str, float] = field(default_factory=dict)
    training_seconds: float = 0.0


def _with_last(
    batches: Iterator[dict[str, torch.Tensor]],
) -> Iterator[tuple[int, dict[str, torch.Tensor], bool]]:
    """``(index, batch, is_last)`` for each batch of ``batches``, looking one batch ahead."""
    previous = next(batches, None)
    index = 0
    while previous is not None:
        following = next(batches, None)
        yield index, previous, following is None
        previous, index = following, index + 1


class Trainer:
    """Trains a :class:`~cinesync.train.torch_model.TorchRecommender` whose ``module`` is already built.

    ``fit`` seeds the generators, moves the module to the device and runs up to ``epochs`` epochs. With
    validation data and an ``early_stopping_metric`` it evaluates every ``eval_every`` epochs, stops after
    ``patience`` evaluations without improvement and restores the best weights. ``max_seconds`` ends training
    after the epoch in which the time ran out. With ``checkpoint_dir`` it checkpoints after every epoch, every
    ``checkpoint_every_steps`` optimizer steps and at each new best score, and writes the training log; with
    ``resume`` it continues from the latest checkpoint, mid-epoch included, to the same weights an
    uninterrupted run reaches. In a ``torchrun`` process group it trains data-parallel (see
    :mod:`cinesync.train.distributed`). The model's ``fit_info`` records ``epochs_run``, ``best_epoch``,
    ``seconds_per_epoch``, ``best_validation`` and ``training_seconds``, plus ``task_weights`` for multi-task models.
    """

    def __init__(
        self, config: TrainerConfig | None = None, *, callbacks: list[Callback] | None = None
    ) -> None:
        self.config = config if config is not None else TrainerConfig()
        self.callbacks: list[Callback] = list(callbacks or [])
        self.stop_training = False
        self.device: torch.device | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self.precision: Precision | None = None
        self.world: World | None = None
        #: The task weighting of a multi-task model (None for one loss) and the tasks it weighs.
        self.task_weighting: TaskWeighting | None = None
        self.tasks: list[TaskConfig] = []
        #: The generator all sampling draws from: epoch orders and ``collate``'s negatives.
        self.generator: torch.Generator | None = None
        self.position = Position()
        #: The training examples (example protocol) or None (a model with ``training_batches`` only).
        self.examples: dict[str, torch.Tensor] | None = None
        #: This epoch's example indices, in the order they are batched.
        self.order: torch.Tensor | None = None
        self._difficulty: torch.Tensor | None = None
        self._epoch_generator_state: torch.Tensor | None = None
        self._totals = EpochTotals()
        self._callbacks: list[Callback] = []
        self._early_stopping: EarlyStopping | None = None
        self._report = TrainingReport()
        self._progress_update: Any = None

    # -- extension points ----------------------------------------------------------------------------------
    def make_optimizer(self, module: torch.nn.Module) -> torch.optim.Optimizer:
        """The optimizer over ``module``'s parameter groups (see :mod:`cinesync.train.optim`)."""
        from cinesync.train.optim import make_optimizer

        return make_optimizer(module, self.config)

    def training_step(
        self,
        model: TorchRecommender,
        batch: dict[str, torch.Tensor],
        *,
        share: float = 1.0,
        step_optimizer: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Forward pass (under autocast) and backward pass on ``batch``; an optimizer step if ``step_optimizer``.

        The loss is scaled by ``share / gradient_accumulation`` before the backward pass: ``share`` is the
        fraction of the global batch these rows are (1 on one process), so that the gradients summed over
        processes and accumulated micro-batches are those of the mean loss. Returns the detached combined
        ``loss`` and each task's loss as ``task/<name>``.
        """
        assert self.precision is not None and self.scaler is not None
        with self.precision.autocast():
            output = model.loss(batch)
        if not isinstance(output, dict) and self.task_weighting is not None and len(self.tasks) == 1:
            output = {self.tasks[0].name: output}
        if isinstance(output, dict):
            if self.task_weighting is None:
                raise CineSyncError(
                    f"{type(model).__name__}.loss returned task losses {sorted(output)}, but its task_heads() "
                    f"declares {sorted(model.task_heads())}; name every head in task_heads()"
                )
            total = self.task_weighting(output)
            task_losses = {f"task/{name}": value.detach().float() for name, value in output.items()}
        else:
            total, task_losses = output.float(), {}
        self.scaler.scale(total * (share / self.config.gradient_accumulation)).backward()
        if step_optimizer:
            self.optimizer_step()
        return {"loss": total.detach(), **task_losses}

    def optimizer_step(self) -> None:
        """Sum gradients across processes, clip, step the optimizer and the schedule, clear the gradients."""
        import torch

        from cinesync.train.distributed import sum_gradients

        assert self.optimizer is not None and self.scaler is not None and self.scheduler is not None
        assert self.world is not None
        parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
        if self.world.size > 1:
            sum_gradients(parameters)
        if self.config.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(parameters, self.config.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def train_epoch(self, model: TorchRecommender, train: Dataset, epoch: int) -> EpochTotals:
        """Train on ``epoch``'s batches from ``self.position.batch`` on; returns this process's running sums.

        Steps the optimizer every ``gradient_accumulation`` batches and after the epoch's last batch, writes a
        checkpoint every ``checkpoint_every_steps`` optimizer steps, and calls the callbacks' ``on_step_end``.
        """
        import torch

        assert self.device is not None
        config = self.config
        model.trained_module.train()
        loss_sum = torch.zeros((), device=self.device)
        task_sums: dict[str, torch.Tensor] = {}
        rows_seen = 0
        started = time.perf_counter()

        def flush() -> None:
            nonlocal loss_sum, rows_seen, started
            totals = self._totals
            totals.loss += loss_sum.item()
            totals.examples += rows_seen
            for name, value in task_sums.items():
                totals.tasks[name] = totals.tasks.get(name, 0.0) + value.item()
            totals.training_seconds += time.perf_counter() - started
            loss_sum, rows_seen, started = torch.zeros((), device=self.device), 0, time.perf_counter()
            task_sums.clear()

        for index, batch, share, last in self._batches(model, train):
            on_device = {name: tensor.to(self.device, non_blocking=True) for name, tensor in batch.items()}
            rows = len(next(iter(on_device.values())))
            step_now = (index + 1) % config.gradient_accumulation == 0 or last
            if rows:
                losses = self.training_step(model, on_device, share=share, step_optimizer=step_now)
                # Accumulate on the device: calling .item() every batch would synchronise with the GPU.
                loss_sum += losses["loss"] * rows
                for name, value in losses.items():
                    if name.startswith("task/"):
                        task_sums[name[5:]] = task_sums.get(name[5:], 0) + value * rows
                rows_seen += rows
            elif step_now:  # no rows for this process in a small last batch: still join the gradient sum
                self.optimizer_step()
            self.position.batch = index + 1
            if self._progress_update is not None:
                self._progress_update(share, rows)
            if step_now:
                self.position.step += 1
                if config.checkpoint_every_steps and self.position.step % config.checkpoint_every_steps == 0:
                    flush()
                    self._save_checkpoint(model, "latest", f"step-{self.position.step:09d}")
                for callback in self._callbacks:
                    callback.on_step_end(self, model, self.position.step)
        flush()
        return self._totals

    def validation_score(self, model: TorchRecommender, validation: Dataset) -> float:
        """The early-stopping metric of ``model`` on ``validation``, the model's training items excluded.

        A declared task's metric is asked of ``model.task_metric`` first (the RMSE of a rating head that
        ``score`` does not expose); everything else goes through :func:`cinesync.evaluation.evaluator.evaluate`.
        """
        metric = self.config.early_stopping_metric
        assert metric is not None
        task = next((task.name for task in self.tasks if task.metric == metric), None)
        return self._measure(model, validation, {task or "": metric})[task or ""]

    def task_scores(self, model: TorchRecommender, validation: Dataset) -> dict[str, float]:
        """Each declared task's metric on ``validation``, by task name (see :meth:`validation_score`)."""
        return self._measure(model, validation, {t.name: str(t.metric) for t in self.tasks if t.metric})

    def _measure(
        self, model: TorchRecommender, validation: Dataset, metrics: dict[str, str]
    ) -> dict[str, float]:
        """``metrics`` (by task name; "" for none) on ``validation``: the model's task metrics, then the evaluator."""
        import torch

        from cinesync.evaluation.evaluator import evaluate

        model.trained_module.eval()
        scores: dict[str, float] = {}
        with torch.no_grad():
            for task, metric in metrics.items():
                value = model.task_metric(task, metric, validation) if task else None
                if value is not None:
                    scores[task] = float(value)
            rest = {task: metric for task, metric in metrics.items() if task not in scores}
            if rest:
                measured = evaluate(model, validation, metrics=tuple(sorted(set(rest.values())))).metrics
                scores.update({task: float(measured[metric]) for task, metric in rest.items()})
        return scores

    # -- the loop ------------------------------------------------------------------------------------------
    def fit(
        self, model: TorchRecommender, train: Dataset, validation: Dataset | None = None
    ) -> TrainingReport:
        """Train ``model`` on ``train``, early-stopping on ``validation`` when given."""
        import torch

        from cinesync.train.distributed import broadcast_parameters, current_world
        from cinesync.train.optim import make_scheduler
        from cinesync.train.precision import resolve_precision

        config = self.config
        seed_everything(config.seed)
        self.world = current_world()
        self.device = resolve_device(config.device)
        module = model.trained_module.to(self.device)
        self._prepare_examples(model, train)
        self._prepare_tasks(model)
        trainable = [*module.parameters()]
        if self.task_weighting is not None:
            trainable.append(self.task_weighting.log_variances)
        if self.world.size > 1:
            broadcast_parameters(trainable)
        self.optimizer = self.make_optimizer(module)
        if self.task_weighting is not None and self.task_weighting.learned:
            # The log-variances are trained like any weight (Kendall et al. 2018), but never decayed.
            self.optimizer.add_param_group(
                {
                    "params": [self.task_weighting.log_variances],
                    "name": "task_weights",
                    "lr": config.learning_rate,
                    "lr_scale": 1.0,
                    "weight_decay": 0.0,
                }
            )
        self.precision = resolve_precision(config.mixed_precision, self.device)
        self.scaler = self.precision.grad_scaler()
        self.generator = torch.Generator().manual_seed(config.seed)
        planned = self._planned_batches(train)
        total_steps = sum(math.ceil(n / config.gradient_accumulation) for n in planned)
        self.scheduler = make_scheduler(self.optimizer, config, total_steps)
        self.stop_training = False
        self._callbacks = [*self.callbacks, PluginHooks()]
        metric = config.early_stopping_metric if validation is not None else None
        self._early_stopping = None
        if metric is not None:
            self._early_stopping = EarlyStopping(
                patience=config.patience, higher_is_better=self._higher_is_better(metric)
            )
            self._callbacks.append(self._early_stopping)
        self._report = report = TrainingReport()
        self.position, self._totals, self.order = Position(), EpochTotals(), None
        if config.resume:
            self._resume(model)
        log_path = self._log_path()
        if log_path is not None and self.world.is_main and report.resumed_from is None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.write_text("", encoding="utf-8")
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

        started = time.perf_counter()
        for callback in self._callbacks:
            callback.on_train_start(self, model)
        with self._progress() as progress:
            done = sum(planned[: self.position.epoch - 1]) + self.position.batch
            bar = progress.add_task(
                type(model).__name__, total=sum(planned), completed=done, status="", speed=""
            )
            self._progress_update = self._progress_updater(progress, bar) if config.progress else None
            for epoch in range(self.position.epoch, config.epochs + 1):
                if self.stop_training:
                    break
                epoch_started = time.perf_counter()
                if self.position.batch == 0:
                    self._start_epoch(model, train, epoch)
                self.train_epoch(model, train, epoch)
                record = self._epoch_record(model, epoch, validation, metric)
                record["seconds"] = time.perf_counter() - epoch_started
                report.history.append(record)
                report.epochs_run = report.best_epoch = epoch
                self._log_epoch(record, metric)
                progress.update(bar, status=f"epoch {epoch} loss {record['loss']:.4f}")
                for callback in self._callbacks:
                    callback.on_epoch_end(self, model, record)
                if config.max_seconds is not None and time.perf_counter() - started >= config.max_seconds:
                    logger.info(
                        "stopping after epoch %d: the time limit of %.0fs ran out", epoch, config.max_seconds
                    )
                    self.stop_training = True
                self.position = Position(epoch + 1, 0, self.position.step)
                self._totals = EpochTotals()
                self._save_checkpoint(model, "latest", f"epoch-{epoch:05d}")
                if self._early_stopping is not None and self._early_stopping.best_epoch == epoch:
                    self._save_checkpoint(model, "best", f"best-epoch-{epoch:05d}")
                self._append_log(record)
        self._progress_update = None
        for callback in self._callbacks:
            callback.on_train_end(self, model, report)
        module.eval()
        report.seconds = time.perf_counter() - started
        epoch_seconds = [
            record["examples"] / record["examples_per_second"]
            for record in report.history
            if record.get("examples_per_second")
        ]
        model.fit_info.update(
            epochs_run=report.epochs_run,
            best_epoch=report.best_epoch,
            best_validation=report.best_score,
            training_seconds=round(report.seconds, 3),
            # Training only (validation excluded), mean over the epochs of this fit.
            seconds_per_epoch=round(sum(epoch_seconds) / len(epoch_seconds), 3) if epoch_seconds else None,
        )
        if self.task_weighting is not None:
            model.fit_info["task_weights"] = self.task_weighting.weights()
        return report

    # -- sampling ------------------------------------------------------------------------------------------
    def _prepare_examples(self, model: TorchRecommender, train: Dataset) -> None:
        """Take the model's training examples (and static difficulties), or check it needs none of them."""
        from cinesync.train.curriculum import example_difficulty

        assert self.world is not None and self.device is not None
        config = self.config
        self._difficulty = None
        if not model.uses_examples:
            needs = [
                feature
                for feature, wanted in (
                    ("a curriculum", config.curriculum is not None),
                    ("data-parallel training", self.world.size > 1),
                )
                if wanted
            ]
            if needs:
                raise CineSyncError(
                    f"{type(model).__name__} implements only training_batches(); {' and '.join(needs)} "
                    "need the example protocol: implement training_examples() and collate() "
                    "(see cinesync.train.torch_model.TorchRecommender)"
                )
            self.examples = None
            return
        self.examples = model.training_examples(train)
        sizes = {name: len(tensor) for name, tensor in self.examples.items()}
        if not sizes or len(set(sizes.values())) != 1 or not next(iter(sizes.values())):
            raise CineSyncError(
                f"{type(model).__name__}.training_examples() must return tensors of one non-zero length, "
                f"got lengths {sizes}"
            )
        curriculum = config.curriculum
        if curriculum is not None and curriculum.difficulty != "loss":
            self._difficulty = example_difficulty(
                model,
                self.examples,
                train,
                curriculum.difficulty,
                batch_size=config.batch_size,
                device=self.device,
                generator=torch_generator(config.seed),
            )

    def _prepare_tasks(self, model: TorchRecommender) -> None:
        from cinesync.train.multitask import TaskWeighting, resolve_tasks

        assert self.device is not None
        heads = model.task_heads()
        self.tasks, self.task_weighting = [], None
        if self.config.tasks or len(heads) > 1:
            self.tasks = resolve_tasks(self.config.tasks, heads, type(model).__name__)
            self.task_weighting = TaskWeighting(self.tasks).to(self.device)

    def _n_examples(self) -> int:
        assert self.examples is not None
        return len(next(iter(self.examples.values())))

    def _planned_batches(self, train: Dataset) -> list[int]:
        """Batches each epoch will have (for the schedule and progress): exact with examples, else estimated."""
        from cinesync.train.curriculum import pacing_fraction

        config = self.config
        if self.examples is None:
            return [math.ceil(len(train) / config.batch_size)] * config.epochs
        n = self._n_examples()
        sizes = [
            n if config.curriculum is None else max(1, math.ceil(pacing_fraction(config.curriculum, e) * n))
            for e in range(1, config.epochs + 1)
        ]
        return [math.ceil(size / config.batch_size) for size in sizes]

    def _start_epoch(self, model: TorchRecommender, train: Dataset, epoch: int) -> None:
        """Draw ``epoch``'s example order: a permutation of every example, or the curriculum's subset."""
        import torch

        from cinesync.train.curriculum import curriculum_order, example_difficulty, pacing_fraction

        assert self.generator is not None and self.device is not None
        self._epoch_generator_state = self.generator.get_state()
        if self.examples is None:
            return
        curriculum = self.config.curriculum
        if curriculum is None:
            self.order = torch.randperm(self._n_examples(), generator=self.generator)
            return
        difficulty = self._difficulty
        if difficulty is None:  # the loss: measured anew on this epoch's starting weights
            difficulty = example_difficulty(
                model,
                self.examples,
                train,
                "loss",
                batch_size=self.config.batch_size,
                device=self.device,
                generator=torch_generator(self.config.seed * 100_003 + epoch),
            )
        self.order = curriculum_order(difficulty, pacing_fraction(curriculum, epoch), self.generator)

    def _batches(
        self, model: TorchRecommender, train: Dataset
    ) -> Iterator[tuple[int, dict[str, torch.Tensor], float, bool]]:
        """``(index, rows for this process, their share of the global batch, is last)`` from the position on."""
        from cinesync.train.distributed import shard_rows

        assert self.generator is not None and self.world is not None
        size, start = self.config.batch_size, self.position.batch
        if self.examples is None:
            for index, batch, last in _with_last(iter(model.training_batches(train, size, self.generator))):
                if index >= start:
                    yield index, batch, 1.0, last
            return
        assert self.order is not None
        n_batches = math.ceil(len(self.order) / size)
        for index in range(start, n_batches):
            rows = self.order[index * size : (index + 1) * size]
            # Every process collates the same global batch with the same generator (same negatives), then
            # keeps its rows: the union over processes is exactly what one process would train on.
            batch = model.collate({name: t[rows] for name, t in self.examples.items()}, self.generator)
            share = 1.0
            if self.world.size > 1:
                batch, share = shard_rows(batch, self.world)
            yield index, batch, share, index + 1 == n_batches

    # -- records, logs, checkpoints ------------------------------------------------------------------------
    def _higher_is_better(self, metric: str) -> bool:
        direction = self.config.early_stopping_direction
        if direction != "auto":
            return direction == "higher"
        if is_metric_plugin(metric) or not any(task.metric == metric for task in self.tasks):
            return metric_higher_is_better(metric)
        raise CineSyncError(
            f"early_stopping_metric {metric!r} is a task's own metric whose direction cinesync cannot know; "
            "set early_stopping_direction to 'higher' or 'lower'"
        )

    def _epoch_record(
        self, model: TorchRecommender, epoch: int, validation: Dataset | None, metric: str | None
    ) -> dict[str, Any]:
        """The epoch's history record: losses summed over processes, validation on rank 0 shared by all."""
        import torch

        from cinesync.train.distributed import broadcast_float

        assert self.world is not None and self.device is not None and self.optimizer is not None
        totals = self._totals
        names = sorted(totals.tasks)
        sums = [totals.loss, float(totals.examples), *(totals.tasks[name] for name in names)]
        if self.world.size > 1:
            reduced = torch.tensor(sums, dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(reduced)
            sums = reduced.tolist()
        examples = max(round(sums[1]), 1)
        loss = sums[0] / examples
        if not np.isfinite(loss):
            raise CineSyncError(
                f"training {type(model).__name__} diverged (loss {loss}); lower the learning rate "
                f"(now {self.config.learning_rate}) or raise the regularisation"
            )
        score = None
        task_metrics: dict[str, float] = {}
        if validation is not None and epoch % self.config.eval_every == 0:
            if metric is not None:
                score = self.validation_score(model, validation) if self.world.is_main else None
                if self.world.size > 1:
                    score = broadcast_float(score, self.device)
            if self.world.is_main and any(task.metric for task in self.tasks):
                task_metrics = self.task_scores(model, validation)
        group = self.optimizer.param_groups[0]
        record: dict[str, Any] = {
            "epoch": epoch,
            "loss": loss,
            "metric": score,
            "seconds": 0.0,
            "examples": examples,
            "examples_per_second": examples / max(totals.training_seconds, 1e-9),
            "peak_memory_mb": peak_memory_mb(self.device),
            "learning_rate": group["lr"] / group.get("lr_scale", 1.0),
            "step": self.position.step,
        }
        if self.examples is not None and self.order is not None:
            record["fraction"] = len(self.order) / self._n_examples()
        if self.task_weighting is not None:
            record["task_losses"] = {
                name: value / examples for name, value in zip(names, sums[2:], strict=True)
            }
            record["task_weights"] = self.task_weighting.weights()
            if task_metrics:
                record["task_metrics"] = task_metrics
        return record

    def _log_path(self) -> Path | None:
        folder = self.config.log_dir or self.config.checkpoint_dir
        return None if folder is None else Path(folder) / TRAINING_LOG

    def _append_log(self, record: dict[str, Any]) -> None:
        path = self._log_path()
        assert self.world is not None
        if path is None or not self.world.is_main:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")

    def _checkpoint(self, model: TorchRecommender) -> Checkpoint:
        from dataclasses import asdict

        from cinesync.train.checkpoint import Checkpoint, random_state

        assert self.generator is not None and self.optimizer is not None
        assert self.scheduler is not None and self.scaler is not None
        tensors, random_meta = random_state()
        tensors["generator"] = self.generator.get_state()
        if self._epoch_generator_state is not None:
            tensors["epoch_generator"] = self._epoch_generator_state
        if self.order is not None and self.position.batch > 0:
            tensors["order"] = self.order.contiguous()
        if self.task_weighting is not None:
            for name, tensor in self.task_weighting.state_dict().items():
                tensors[f"task_weighting.{name}"] = tensor.detach().cpu().contiguous()
        stopping = self._early_stopping
        return Checkpoint(
            model={
                k: v.detach().cpu().contiguous().clone() for k, v in model.trained_module.state_dict().items()
            },
            optimizer=self.optimizer.state_dict(),
            tensors=tensors,
            state={
                "position": asdict(self.position),
                "totals": asdict(self._totals),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "random": random_meta,
                "history": self._report.history,
                "early_stopping": None if stopping is None else stopping.state(),
                "finished": self.stop_training,
                "config": self.config.model_dump(mode="json"),
            },
        )

    def _save_checkpoint(self, model: TorchRecommender, kind: Literal["latest", "best"], name: str) -> None:
        from cinesync.train.checkpoint import save_checkpoint

        assert self.world is not None
        if self.config.checkpoint_dir is None or not self.world.is_main:
            return
        save_checkpoint(self.config.checkpoint_dir, kind, name, self._checkpoint(model))

    def _resume(self, model: TorchRecommender) -> None:
        """Restore everything the latest checkpoint holds; no checkpoint yet means a fresh start."""
        from cinesync.train.checkpoint import load_checkpoint, restore_random_state

        assert self.config.checkpoint_dir is not None and self.generator is not None
        assert self.optimizer is not None and self.scheduler is not None and self.scaler is not None
        checkpoint = load_checkpoint(self.config.checkpoint_dir, "latest")
        if checkpoint is None:
            logger.info("no checkpoint in %s yet: training from the start", self.config.checkpoint_dir)
            return
        state = checkpoint.state
        model.trained_module.load_state_dict(checkpoint.model)
        self.optimizer.load_state_dict(checkpoint.optimizer)
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.task_weighting is not None:
            prefix = "task_weighting."
            self.task_weighting.load_state_dict(
                {k[len(prefix) :]: v for k, v in checkpoint.tensors.items() if k.startswith(prefix)}
            )
        restore_random_state(checkpoint.tensors, state["random"])
        self.position = Position(**state["position"])
        self._totals = EpochTotals(**state["totals"])
        self.generator.set_state(checkpoint.tensors["generator"])
        self._epoch_generator_state = checkpoint.tensors.get("epoch_generator")
        if self.position.batch > 0:
            if self.examples is None:  # replay the epoch's batches from its start, skipping the trained ones
                assert self._epoch_generator_state is not None
                self.generator.set_state(self._epoch_generator_state)
            else:
                self.order = checkpoint.tensors["order"]
        self._report.history = list(state["history"])
        self._report.resumed_from = self.position.step
        if self._early_stopping is not None and state["early_stopping"] is not None:
            best = load_checkpoint(self.config.checkpoint_dir, "best")
            self._early_stopping.restore(state["early_stopping"], None if best is None else best.model)
        self.stop_training = bool(state["finished"])
        logger.info(
            "resumed from %s at epoch %d, batch %d (step %d)",
            self.config.checkpoint_dir,
            self.position.epoch,
            self.position.batch,
            self.position.step,
        )

    def _log_epoch(self, record: dict[str, Any], metric: str | None) -> None:
        score = "" if record["metric"] is None else f" {metric} {record['metric']:.4f}"
        tasks = "".join(
            f" {name} {loss:.4f} (w {record['task_weights'][name]:.3g})"
            for name, loss in record.get("task_losses", {}).items()
        )
        logger.info(
            "epoch %d/%d loss %.4f%s%s lr %.3g %.2fs %.0f ex/s peak %.0f MB",
            record["epoch"],
            self.config.epochs,
            record["loss"],
            tasks,
            score,
            record["learning_rate"],
            record["seconds"],
            record["examples_per_second"],
            record["peak_memory_mb"],
        )

    def _progress(self) -> Any:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("batches {task.fields[speed]} {task.fields[status]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not self.config.progress or not (self.world is None or self.world.is_main),
            transient=True,
        )

    def _progress_updater(self, progress: Any, bar: Any) -> Any:
        """A function advancing the bar by one batch and showing examples/s (all processes) since the start."""
        assert self.world is not None
        started, seen = time.perf_counter(), 0.0

        def update(share: float, rows: int) -> None:
            nonlocal seen
            seen += rows / share if share else rows  # this process's rows / its share = the global batch
            speed = seen / max(time.perf_counter() - started, 1e-9)
            progress.update(bar, advance=1, speed=f"{speed:,.0f} ex/s")

        return update


def torch_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    import torch

    return torch.Generator().manual_seed(seed)
