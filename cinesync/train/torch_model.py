"""Base class of recommenders whose state is a ``torch.nn.Module`` trained by the shared :class:`Trainer`."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from cinesync.errors import CineSyncError, NotFittedError
from cinesync.interfaces import ComponentConfig, Recommender
from cinesync.train.trainer import Callback, Trainer, TrainerConfig, TrainingReport, seed_everything

if TYPE_CHECKING:
    from cinesync.data.dataset import Dataset


class TorchRecommender(Recommender):
    """A recommender trained by mini-batch gradient descent with :class:`~cinesync.train.trainer.Trainer`.

    Subclasses implement:

    * ``build_module(n_users, n_items)``: a freshly initialised module. It depends on the config and the sizes
      only, so a saved model is rebuilt without its training data before its weights are loaded.
    * the example protocol, which lets the trainer choose each epoch's examples (shuffling, curriculum,
      sharding across processes):

      - ``training_examples(dataset)``: every training example once, as a dict of equal-length tensors (one
        row per example, on the CPU), e.g. ``{"users": ..., "items": ...}``. Computed once per ``fit``.
      - ``collate(examples, generator)``: a batch from a subset of those rows: the place for negative
        sampling, padding, masking. All randomness comes from ``generator``, so seeded runs repeat exactly;
        every tensor of the batch has the batch as its first dimension (rows can be split across processes).

      A model may instead implement ``training_batches(dataset, batch_size, generator)`` alone (one epoch of
      batches); it then trains without curriculum or data parallelism.
    * ``loss(batch)``: the loss to minimise on a batch (already on the module's device): a scalar, the mean
      over the batch's examples (so that accumulated and data-parallel gradients are those of the mean); or,
      for a multi-task model, a dict of such scalars by task head (see ``task_heads``).
    * ``score(users, items=None, context=None)`` from :class:`~cinesync.interfaces.Recommender`.

    Optional: ``example_losses(batch)`` (unreduced, for the ``loss`` curriculum), ``example_difficulty``,
    ``task_heads``, ``task_metric``, ``training_callbacks`` (trainer hooks its training needs), and on the
    module ``layer_groups()`` for layer-wise learning rates (see :mod:`cinesync.train.optim`).

    The model's ``Config`` holds model hyper-parameters; optimisation settings live in
    :class:`~cinesync.train.trainer.TrainerConfig`. ``default_trainer()`` gives the settings that suit the
    model; the fields a caller sets explicitly in the ``trainer`` passed to ``fit`` override them.
    """

    iterative: ClassVar[bool] = True

    def __init__(self, config: ComponentConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.module: torch.nn.Module | None = None
        #: The report of the last training run (per-epoch history included); None for a loaded model.
        self.training_report: TrainingReport | None = None

    @abstractmethod
    def build_module(self, n_users: int, n_items: int) -> torch.nn.Module:
        """A freshly initialised module for ``n_users`` users and ``n_items`` items."""

    # -- the example protocol ------------------------------------------------------------------------------
    def training_examples(self, dataset: Dataset) -> dict[str, torch.Tensor]:
        """Every training example of ``dataset`` once: a dict of equal-length CPU tensors, one row per example."""
        raise NotImplementedError(
            f"{type(self).__name__} implements neither training_examples() and collate() nor training_batches()"
        )

    def collate(
        self, examples: dict[str, torch.Tensor], generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """A training batch from rows of ``training_examples`` (negatives, padding, ...); by default the rows."""
        return examples

    @property
    def uses_examples(self) -> bool:
        """Whether this model implements the example protocol (rather than ``training_batches`` alone)."""
        return type(self).training_examples is not TorchRecommender.training_examples

    def training_batches(
        self, dataset: Dataset, batch_size: int, generator: torch.Generator
    ) -> Iterator[dict[str, torch.Tensor]]:
        """One epoch of training batches drawn with ``generator``: every example once, shuffled, collated."""
        examples = self.training_examples(dataset)
        size = len(next(iter(examples.values())))
        order = torch.randperm(size, generator=generator)
        for start in range(0, size, batch_size):
            rows = order[start : start + batch_size]
            yield self.collate({name: tensor[rows] for name, tensor in examples.items()}, generator)

    @abstractmethod
    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | dict[str, torch.Tensor]:
        """The loss to minimise on ``batch``: a scalar mean, or one scalar mean per task head."""

    # -- optional: curriculum and multi-task ----------------------------------------------------------------
    def example_losses(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The unreduced loss of each example of ``batch`` (shape ``(batch,)``), for the ``loss`` curriculum."""
        raise CineSyncError(
            f"{type(self).__name__} does not implement example_losses(), which curriculum difficulty 'loss' "
            "needs; choose difficulty 'item_popularity' or 'sequence_length'"
        )

    def example_difficulty(
        self, examples: dict[str, torch.Tensor], dataset: Dataset, measure: str
    ) -> torch.Tensor:
        """How hard each example is (higher is harder) under ``measure``; override for other example layouts.

        ``item_popularity``: minus the number of training interactions of the example's ``items`` (popular
        items are easy); ``sequence_length``: the example's ``lengths`` if it has them, else the number of
        training interactions of its ``users``.
        """
        if measure == "item_popularity":
            if "items" not in examples:
                raise CineSyncError(
                    f"difficulty 'item_popularity' needs an 'items' tensor in {type(self).__name__}'s "
                    f"training examples (it has {sorted(examples)}); override example_difficulty()"
                )
            return -torch.from_numpy(dataset.item_counts()).float()[examples["items"]]
        if measure == "sequence_length":
            if "lengths" in examples:
                return examples["lengths"].float()
            if "users" not in examples:
                raise CineSyncError(
                    f"difficulty 'sequence_length' needs 'lengths' or 'users' in {type(self).__name__}'s "
                    f"training examples (it has {sorted(examples)}); override example_difficulty()"
                )
            return torch.from_numpy(dataset.user_counts()).float()[examples["users"]]
        raise CineSyncError(f"unknown curriculum difficulty {measure!r}")

    def task_heads(self) -> dict[str, str]:
        """The model's task heads and the loss each computes (``{"ranking": "bpr", "rating": "mse"}``).

        A model with more than one head returns a dict of losses from ``loss`` with these keys; an empty dict
        (the default) means one unnamed loss.
        """
        return {}

    def task_metric(self, task: str, metric: str, dataset: Dataset) -> float | None:
        """``metric`` of task head ``task`` on ``dataset``, or None to leave it to the evaluator (the default).

        For measures the evaluator cannot take from ``score``: the RMSE of a rating head whose ``score`` ranks.
        """
        return None

    def training_callbacks(self) -> list[Callback]:
        """:class:`~cinesync.train.trainer.Callback` objects the trainer calls while fitting this model."""
        return []

    def default_trainer(self) -> TrainerConfig:
        """Training settings that suit this model; override to tune them."""
        return TrainerConfig()

    def training_config(self, trainer: TrainerConfig | None) -> TrainerConfig:
        """``default_trainer()`` with the fields set explicitly in ``trainer`` taking precedence."""
        defaults = self.default_trainer()
        if trainer is None:
            return defaults
        # Validated again, not model_copy(update=...): nested tables (curriculum, tasks) must stay models.
        return TrainerConfig.model_validate(
            {**defaults.model_dump(), **trainer.model_dump(include=trainer.model_fields_set)}
        )

    @property
    def trained_module(self) -> torch.nn.Module:
        """The module; raises :class:`~cinesync.errors.NotFittedError` before ``fit`` or loading."""
        if self.module is None:
            raise NotFittedError(
                f"{type(self).__name__} is not fitted: call fit(dataset) or cinesync.load(path)"
            )
        return self.module

    @property
    def device(self) -> torch.device:
        return next(self.trained_module.parameters()).device

    def _fit(self, dataset: Dataset, *, validation: Dataset | None, trainer: TrainerConfig | None) -> None:
        config = self.training_config(trainer)
        seed_everything(config.seed)  # the initial weights are part of what the seed fixes
        self.module = self.build_module(self.n_users, self.n_items)
        self.training_report = Trainer(config, callbacks=self.training_callbacks()).fit(
            self, dataset, validation
        )

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {
            name: tensor.detach().cpu().contiguous()
            for name, tensor in self.trained_module.state_dict().items()
        }

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        module = self.build_module(self.n_users, self.n_items)
        module.load_state_dict(tensors)
        self.module = module.eval()
