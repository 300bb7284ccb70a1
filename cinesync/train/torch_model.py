"""Base class of recommenders whose state is a ``torch.nn.Module`` trained by the shared :class:`Trainer`."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from cinesync.errors import NotFittedError
from cinesync.interfaces import ComponentConfig, Recommender
from cinesync.train.trainer import Trainer, TrainerConfig, TrainingReport, seed_everything

if TYPE_CHECKING:
    from cinesync.data.dataset import Dataset


class TorchRecommender(Recommender):
    """A recommender trained by mini-batch gradient descent with :class:`~cinesync.train.trainer.Trainer`.

    Subclasses implement:

    * ``build_module(n_users, n_items)``: a freshly initialised module. It depends on the config and the sizes
      only, so a saved model is rebuilt without its training data before its weights are loaded.
    * ``training_batches(dataset, batch_size, generator)``: one epoch of batches, each a dict of tensors whose
      first dimension is the batch; all randomness comes from ``generator`` so seeded runs repeat exactly.
    * ``loss(batch)``: the scalar loss of a batch (already on the module's device).
    * ``score(users, items=None, context=None)`` from :class:`~cinesync.interfaces.Recommender`.

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

    @abstractmethod
    def training_batches(
        self, dataset: Dataset, batch_size: int, generator: torch.Generator
    ) -> Iterator[dict[str, torch.Tensor]]:
        """One epoch of training batches drawn with ``generator``."""

    @abstractmethod
    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The scalar loss to minimise on ``batch``."""

    def default_trainer(self) -> TrainerConfig:
        """Training settings that suit this model; override to tune them."""
        return TrainerConfig()

    def training_config(self, trainer: TrainerConfig | None) -> TrainerConfig:
        """``default_trainer()`` with the fields set explicitly in ``trainer`` taking precedence."""
        defaults = self.default_trainer()
        if trainer is None:
            return defaults
        return defaults.model_copy(update=trainer.model_dump(include=trainer.model_fields_set))

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
        self.training_report = Trainer(config).fit(self, dataset, validation)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {
            name: tensor.detach().cpu().contiguous()
            for name, tensor in self.trained_module.state_dict().items()
        }

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        module = self.build_module(self.n_users, self.n_items)
        module.load_state_dict(tensors)
        self.module = module.eval()
