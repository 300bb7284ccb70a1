"""Multi-task losses: fixed weights or learned homoscedastic-uncertainty weights.

Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene Geometry and
Semantics", CVPR 2018. Each uncertainty-weighted task ``t`` has a learned log-variance ``s_t = log σ_t²`` and
contributes ``c_t · exp(-s_t) · L_t + ½ s_t`` to the total, with ``c_t = ½`` for regression losses (a Gaussian
likelihood, their eq. 7) and ``c_t = 1`` otherwise (their eq. 10); a task with a fixed weight ``w`` contributes
``w · L_t``. The ``s_t`` are parameters in the optimizer: a task whose loss stays large gets a larger variance
and so a smaller weight, and the ``½ s_t`` term stops every variance from growing without bound.

A :class:`~cinesync.train.torch_model.TorchRecommender` with several task heads returns a dict of task losses
from ``loss(batch)`` and names its heads and their losses in ``task_heads()``; the tasks themselves are
declared by :class:`~cinesync.train.trainer.TaskConfig` entries of the ``[training]`` table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from cinesync.errors import CineSyncError

if TYPE_CHECKING:
    from cinesync.train.trainer import TaskConfig

#: Losses that are a Gaussian negative log-likelihood up to constants: their uncertainty weight has a ½ factor.
REGRESSION_LOSSES = frozenset({"mse", "gaussian", "regression"})


def resolve_tasks(tasks: list[TaskConfig], heads: dict[str, str], model_name: str) -> list[TaskConfig]:
    """The tasks to weigh: the configured ones (checked against ``heads``), or every head with weight 1.

    ``heads`` maps each task head of the model to the loss it computes. Raises :class:`CineSyncError` naming
    every task that is not a head, declares another loss than its head computes, or a head left undeclared.
    """
    from cinesync.train.trainer import TaskConfig

    if not tasks:
        return [TaskConfig(name=name, loss=loss, weight=1.0) for name, loss in heads.items()]
    problems = []
    for task in tasks:
        if task.name not in heads:
            problems.append(
                f"task {task.name!r} is not a head of {model_name} (its heads: {', '.join(heads) or 'none'})"
            )
        elif task.loss is not None and task.loss != heads[task.name]:
            problems.append(
                f"task {task.name!r} declares loss {task.loss!r} but {model_name}'s head computes "
                f"{heads[task.name]!r}"
            )
    missing = sorted(set(heads) - {task.name for task in tasks})
    if missing:
        problems.append(
            f"{model_name} has heads without a task entry: {', '.join(missing)}; declare them too"
        )
    if problems:
        raise CineSyncError("training.tasks: " + "; ".join(problems))
    return [task.model_copy(update={"loss": task.loss or heads[task.name]}) for task in tasks]


class TaskWeighting(torch.nn.Module):
    """Combines a dict of task losses into one scalar; see the module docstring for the formula."""

    def __init__(self, tasks: list[TaskConfig]) -> None:
        super().__init__()
        self.names = [task.name for task in tasks]
        self.learned = [task.name for task in tasks if task.weight == "uncertainty"]
        self.fixed = {task.name: float(task.weight) for task in tasks if task.weight != "uncertainty"}
        self.factors = {task.name: 0.5 if (task.loss or "") in REGRESSION_LOSSES else 1.0 for task in tasks}
        # s_t = log σ_t² starts at 0, so every learned weight starts at its factor c_t.
        self.log_variances = torch.nn.Parameter(torch.zeros(len(self.learned)))

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        if set(losses) != set(self.names):
            raise CineSyncError(
                f"the model returned losses for {sorted(losses)} but the tasks are {sorted(self.names)}"
            )
        total = self.log_variances.new_zeros(())
        for name, weight in self.fixed.items():
            total = total + weight * losses[name].float()
        for position, name in enumerate(self.learned):
            log_variance = self.log_variances[position]
            total = total + self.factors[name] * torch.exp(-log_variance) * losses[name].float()
            total = total + 0.5 * log_variance
        return total

    def weights(self) -> dict[str, float]:
        """The current weight on each task's loss (``c_t · exp(-s_t)`` for learned ones)."""
        learned = torch.exp(-self.log_variances.detach()).tolist()
        return {
            **self.fixed,
            **{name: self.factors[name] * w for name, w in zip(self.learned, learned, strict=True)},
        }
