"""Data-parallel training across processes started by ``torchrun`` (gloo on CPU, NCCL on GPU).

Run a model manifest on two processes of this machine::

    torchrun --nproc_per_node=2 -m cinesync.train.distributed registry/models/bpr_mf.toml --output out/bpr

Every process builds the same model from the same seed, draws the same *global* batch (``batch_size`` in the
manifest is the global batch, so a manifest means the same thing on any number of processes) and trains on
its share of the rows: rows ``rank, rank + world, ...``. After each backward pass the gradients are summed
across processes with one all-reduce, each rank's loss having been weighted by its share of the batch, so
every process applies the gradient of the mean loss over the whole global batch: the update a single process
makes on that batch, up to floating-point summation order (``tests/integration/test_distributed.py``). This
is the arithmetic of ``DistributedDataParallel`` (Li et al., "PyTorch Distributed", VLDB 2020) done
explicitly: our models compute their loss through submodules rather than ``module.forward``, which
``DistributedDataParallel``'s reducer relies on. Validation, checkpoints, logs and the artifact are the work of
rank 0; the validation score is broadcast so every rank takes the same early-stopping decision.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import distributed

if TYPE_CHECKING:
    from collections.abc import Iterable

logger = logging.getLogger("cinesync.train")


@dataclass(frozen=True)
class World:
    """This process's ``rank`` among ``size`` training processes (0 of 1 without a process group)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current_world() -> World:
    """The world of the initialised default process group, or a world of one process."""
    if distributed.is_available() and distributed.is_initialized():
        return World(distributed.get_rank(), distributed.get_world_size())
    return World()


def init_from_environment() -> World:
    """Join the process group ``torchrun`` describes in the environment (``RANK``, ``WORLD_SIZE``, ...).

    Uses NCCL when CUDA is available (one device per local rank) and gloo otherwise. Without ``WORLD_SIZE``
    (a plain ``python`` run) nothing is initialised and the world is one process.
    """
    if "WORLD_SIZE" not in os.environ or distributed.is_initialized():
        return current_world()
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        distributed.init_process_group("nccl")
    else:
        distributed.init_process_group("gloo")
    return current_world()


def broadcast_parameters(parameters: Iterable[torch.Tensor]) -> None:
    """Copy rank 0's values of ``parameters`` to every rank (they start equal when seeded; this makes sure)."""
    for parameter in parameters:
        distributed.broadcast(parameter.data, src=0)


def sum_gradients(parameters: list[torch.Tensor]) -> None:
    """Sum every parameter's gradient across ranks, in one flat all-reduce.

    A parameter without a gradient contributes zeros (another rank may have one), and receives the sum.
    """
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads])
    distributed.all_reduce(flat)
    offset = 0
    for parameter in parameters:
        size = parameter.numel()
        parameter.grad = flat[offset : offset + size].view_as(parameter).clone()
        offset += size


def broadcast_float(value: float | None, device: torch.device) -> float | None:
    """Rank 0's ``value`` on every rank (None passes as NaN)."""
    tensor = torch.tensor([float("nan") if value is None else value], dtype=torch.float64, device=device)
    distributed.broadcast(tensor, src=0)
    result = float(tensor.item())
    return None if result != result else result


def shard_rows(batch: dict[str, torch.Tensor], world: World) -> tuple[dict[str, torch.Tensor], float]:
    """This rank's rows of a global ``batch`` (every ``world.size``-th from ``world.rank``) and their share.

    The share (local rows / global rows) weights this rank's loss, so that summing the ranks' gradients gives
    the gradient of the mean loss over the global batch even when the rows do not divide evenly.
    """
    global_rows = len(next(iter(batch.values())))
    local = {name: tensor[world.rank :: world.size] for name, tensor in batch.items()}
    return local, len(next(iter(local.values()))) / max(global_rows, 1)


def main(argv: list[str] | None = None) -> int:
    """``python -m cinesync.train.distributed MANIFEST``: train a model manifest on every torchrun process."""
    from cinesync.manifest import EvaluationProtocol, ModelManifest, check_components, load_manifest
    from cinesync.registry import build
    from cinesync.suite import prepare_data
    from cinesync.train.trainer import TrainerConfig

    parser = argparse.ArgumentParser(
        prog="python -m cinesync.train.distributed",
        description="Train one model manifest with data parallelism; start it with torchrun.",
    )
    parser.add_argument("manifest", help="a model manifest (kind = 'model')")
    parser.add_argument("--data-dir", default=None, help="where named datasets are found")
    parser.add_argument("--output", default=None, help="artifact directory, written by rank 0")
    args = parser.parse_args(argv)

    world = init_from_environment()
    logging.basicConfig(level=logging.INFO if world.is_main else logging.WARNING, format="%(message)s")
    manifest = load_manifest(args.manifest)
    if not isinstance(manifest, ModelManifest):
        parser.error(f"{args.manifest} is a {manifest.kind} manifest; give a model manifest")
    check_components(manifest, args.manifest)
    protocol = manifest.evaluation or EvaluationProtocol()
    split = prepare_data(protocol, args.data_dir)
    trainer = TrainerConfig.model_validate({"progress": world.is_main, **manifest.training})
    model = build("recommender", manifest.component, **manifest.params)
    model.fit(split.train, validation=split.valid, trainer=trainer)
    if world.is_main:
        logger.info("trained %s on %d process(es): %s", manifest.name, world.size, model.fit_info)
        if args.output:
            model.save(args.output)
    if distributed.is_initialized():
        distributed.barrier()
        distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
