"""Curriculum learning: train on the easiest examples first and let harder ones in over the epochs.

Bengio, Louradour, Collobert & Weston, "Curriculum Learning", ICML 2009: presenting examples from easy to hard
can speed up training and reach better optima. A curriculum here is two choices:

* a *difficulty* per training example: ``item_popularity`` (examples of popular items are easy, rare items
  hard), ``sequence_length`` (users with short histories are easy; a model may give its own lengths), or
  ``loss`` (the current per-example loss of the model, recomputed at the start of every epoch: self-paced
  learning, Kumar, Packer & Koller, NeurIPS 2010);
* a *pacing* function: the fraction of the examples, easiest first, that epoch ``e`` may sample from.
  ``linear`` grows from ``start_fraction`` to 1 at ``full_at_epoch``; ``root`` grows with the square root of
  progress (Platanios et al., "Competence-based Curriculum Learning", NAACL 2019), admitting hard examples
  sooner; ``step`` keeps ``start_fraction`` until ``full_at_epoch`` and then uses everything.

Each epoch the trainer shuffles the admitted subset; which examples are admitted changes with the epoch, so the
sampled distribution really moves from easy to hard (``tests/unit/test_training_curriculum.py``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from cinesync.errors import CineSyncError

if TYPE_CHECKING:
    from cinesync.data.dataset import Dataset
    from cinesync.train.torch_model import TorchRecommender
    from cinesync.train.trainer import CurriculumConfig, Difficulty


def pacing_fraction(config: CurriculumConfig, epoch: int) -> float:
    """The fraction of examples (easiest first) that 1-based ``epoch`` samples from; 1 from ``full_at_epoch``."""
    if epoch >= config.full_at_epoch:
        return 1.0
    progress = (epoch - 1) / max(config.full_at_epoch - 1, 1)
    start = config.start_fraction
    if config.pacing == "linear":
        return start + (1 - start) * progress
    if config.pacing == "root":
        return math.sqrt(start**2 + (1 - start**2) * progress)
    return start


def example_difficulty(
    model: TorchRecommender,
    examples: dict[str, torch.Tensor],
    dataset: Dataset,
    measure: Difficulty,
    *,
    batch_size: int,
    device: torch.device,
    generator: torch.Generator,
) -> torch.Tensor:
    """One difficulty per example (higher is harder), from ``model.example_difficulty`` or the model's loss.

    ``loss`` collates the examples in order with ``generator`` (so negatives are sampled as in training) and
    asks ``model.example_losses`` for the unreduced loss of each, without gradients.
    """
    if measure != "loss":
        return model.example_difficulty(examples, dataset, measure).float()
    module = model.trained_module
    was_training = module.training
    module.eval()
    size = len(next(iter(examples.values())))
    losses = []
    with torch.no_grad():
        for start in range(0, size, batch_size):
            chunk = {name: tensor[start : start + batch_size] for name, tensor in examples.items()}
            batch = {k: v.to(device) for k, v in model.collate(chunk, generator).items()}
            losses.append(model.example_losses(batch).float().cpu())
    module.train(was_training)
    return torch.cat(losses)


def curriculum_order(difficulty: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """Indices of the easiest ``ceil(fraction * n)`` examples, shuffled with ``generator``.

    Ties in difficulty are broken at random (a seeded permutation before a stable sort), so a cut through a
    block of equally hard examples does not always keep the same ones.
    """
    if difficulty.ndim != 1:
        raise CineSyncError(
            f"a curriculum needs one difficulty per example, got shape {tuple(difficulty.shape)}"
        )
    n = len(difficulty)
    keep = max(1, math.ceil(fraction * n))
    jitter = torch.randperm(n, generator=generator)
    ranked = jitter[torch.sort(difficulty[jitter], stable=True).indices]
    admitted = ranked[:keep]
    return admitted[torch.randperm(keep, generator=generator)]
