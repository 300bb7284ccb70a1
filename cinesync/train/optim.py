"""Optimizer parameter groups and the learning-rate schedule.

* Decoupled weight decay: with ``optimizer = "adamw"`` the decay shrinks weights directly instead of adding an
  L2 term to the gradient (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019). Whatever
  the optimizer, ``weight_decay`` applies only to parameters outside the ``no_decay`` classes: by default every
  ``nn.Embedding`` table (decay pulls every row toward zero at every step, rows a batch never touches
  included, which collapses rarely seen users and items) and every bias or other 1-d parameter (norm scales).
  Parameters are classified by the type of the module that owns them and by their name, never by position.
* Layer-wise learning-rate decay (Clark et al., "ELECTRA", ICLR 2020; Bao et al., "BEiT", ICLR 2022): with
  ``layer_lr_decay = d`` and named layer groups ordered from input to output, group ``i`` of ``n`` learns at
  ``learning_rate · d^(n-1-i)``. A module names its groups with ``layer_groups() -> [(name, [prefix, ...])]``
  (parameter-name prefixes); otherwise each top-level child module is a group, in registration order.
  Parameters no group claims learn at the full rate.
* Schedule: linear warm-up over ``warmup_steps`` (or ``warmup_ratio`` of all optimizer steps) from 0 to the
  learning rate, then ``constant``, ``cosine`` (Loshchilov & Hutter, "SGDR", ICLR 2017, without restarts) or
  ``linear`` decay to 0 at the last step (Goyal et al. 2017 for warm-up).

Each parameter group carries ``name`` (``<layer group>/<decay|no_decay>``) and ``lr_scale`` (its multiple of the
configured learning rate), so logs and tests can see what each group got.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cinesync.errors import CineSyncError

if TYPE_CHECKING:
    from cinesync.train.trainer import TrainerConfig

#: ``no_decay`` keywords; any other entry is a parameter-name prefix.
EMBEDDINGS, BIASES = "embeddings", "biases"


def no_decay_names(module: nn.Module, no_decay: list[str]) -> set[str]:
    """Names of the parameters of ``module`` that get no weight decay under the ``no_decay`` classes.

    ``"embeddings"``: weights of ``nn.Embedding`` / ``nn.EmbeddingBag`` modules; ``"biases"``: parameters named
    ``bias`` and every parameter with fewer than 2 dimensions (norm scales, scalars); any other entry: parameters
    whose name starts with it.
    """
    prefixes = [entry for entry in no_decay if entry not in (EMBEDDINGS, BIASES)]

    def spared(owner: nn.Module, param_name: str, full: str, parameter: nn.Parameter) -> bool:
        if EMBEDDINGS in no_decay and isinstance(owner, nn.Embedding | nn.EmbeddingBag):
            return True
        if BIASES in no_decay and (param_name == "bias" or parameter.ndim < 2):
            return True
        return any(full.startswith(prefix) for prefix in prefixes)

    return {
        f"{module_name}.{param_name}" if module_name else param_name
        for module_name, child in module.named_modules()
        for param_name, parameter in child.named_parameters(recurse=False)
        if spared(child, param_name, f"{module_name}.{param_name}" if module_name else param_name, parameter)
    }


def layer_groups(module: nn.Module) -> list[tuple[str, list[str]]]:
    """The module's named layer groups, input to output: its ``layer_groups()`` or its top-level children."""
    declared = getattr(module, "layer_groups", None)
    if callable(declared):
        return [(str(name), list(prefixes)) for name, prefixes in declared()]
    return [(name, [f"{name}."]) for name, _ in module.named_children()]


def parameter_groups(module: nn.Module, config: TrainerConfig) -> list[dict[str, Any]]:
    """Optimizer parameter groups of ``module``: one per (layer group, decay or not) that has parameters."""
    excluded = no_decay_names(module, config.no_decay)
    groups = layer_groups(module) if config.layer_lr_decay is not None else []
    decay_rate = config.layer_lr_decay if config.layer_lr_decay is not None else 1.0
    claimed: dict[str, tuple[int, str]] = {}
    for position, (group_name, prefixes) in enumerate(groups):
        for name, _ in module.named_parameters():
            if name not in claimed and any(name == p.rstrip(".") or name.startswith(p) for p in prefixes):
                claimed[name] = (position, group_name)
    if groups and not claimed:
        raise CineSyncError(
            f"layer_lr_decay is set but no parameter of {type(module).__name__} matches its layer groups "
            f"{[name for name, _ in groups]}; check the prefixes its layer_groups() returns"
        )
    buckets: dict[tuple[str, bool], dict[str, Any]] = {}
    for name, parameter in module.named_parameters():
        if not parameter.requires_grad:
            continue
        position, group_name = claimed.get(name, (len(groups) - 1, "rest"))
        scale = decay_rate ** (len(groups) - 1 - position) if groups else 1.0
        decays = name not in excluded
        bucket = buckets.setdefault(
            (group_name, decays),
            {
                "params": [],
                "name": f"{group_name if groups else 'all'}/{'decay' if decays else 'no_decay'}",
                "lr": config.learning_rate * scale,
                "lr_scale": scale,
                "weight_decay": config.weight_decay if decays else 0.0,
            },
        )
        bucket["params"].append(parameter)
    return list(buckets.values())


def make_optimizer(module: nn.Module, config: TrainerConfig) -> torch.optim.Optimizer:
    """The configured optimizer over :func:`parameter_groups` of ``module``."""
    optimizers: dict[str, Callable[..., torch.optim.Optimizer]] = {
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "sgd": torch.optim.SGD,
        "adagrad": torch.optim.Adagrad,
    }
    return optimizers[config.optimizer](parameter_groups(module, config), lr=config.learning_rate)


def schedule_factor(config: TrainerConfig, step: int, total_steps: int) -> float:
    """The multiple of each group's learning rate at optimizer step ``step`` (0-based) of ``total_steps``."""
    warmup = config.warmup_steps
    if warmup is None:
        warmup = math.ceil(config.warmup_ratio * total_steps)
    if step < warmup:
        return (step + 1) / warmup
    if config.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(total_steps - warmup, 1))
    if config.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - progress


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainerConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-optimizer-step scheduler following :func:`schedule_factor`."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: schedule_factor(config, step, total_steps)
    )
