"""Data-parallel training: two gloo processes on the CPU reach the weights of one process on the same
global batch."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.multiprocessing
from safetensors.torch import load_file, save_file

from cinesync.data.dataset import Dataset, build_dataset
from cinesync.train.trainer import TrainerConfig
from cinesync_plugins.recommenders.bpr_mf import BPRMF


def tiny_dataset() -> Dataset:
    rng = np.random.default_rng(0)
    rows = [(u, int(i)) for u in range(20) for i in rng.choice(15, size=5, replace=False)]
    return build_dataset("tiny", pd.DataFrame(rows, columns=["user", "item"]))


# 100 examples in global batches of 24: the last batch (4 rows) also checks the share weighting.
SETTINGS = {"epochs": 3, "batch_size": 24, "learning_rate": 0.05, "optimizer": "adamw", "weight_decay": 0.01}


def config() -> TrainerConfig:
    return TrainerConfig(progress=False, device="cpu", early_stopping_metric=None, **SETTINGS)


class CountingBPRMF(BPRMF):
    """Counts the rows its loss sees: this process's share of the examples."""

    rows_trained = 0

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | dict[str, torch.Tensor]:
        self.rows_trained += len(batch["users"])
        return super().loss(batch)


def train_on_rank(rank: int, world_size: int, port: int, output: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    model = CountingBPRMF(dim=8).fit(tiny_dataset(), trainer=config())
    if rank == 0:
        save_file({**model.state_tensors(), "rows_trained": torch.tensor(model.rows_trained)}, output)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    # Skip interpreter finalisation: gloo's transport threads sometimes outlive it and abort the process
    # ("terminate called without an active exception", about one run in ten here; see pytorch PR 179291)
    # after all the work above is done and written.
    os._exit(0)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_two_gloo_processes_match_one_process_on_the_same_global_batch(tmp_path: Path) -> None:
    single = BPRMF(dim=8).fit(tiny_dataset(), trainer=config()).state_tensors()
    output = tmp_path / "rank0.safetensors"

    torch.multiprocessing.spawn(train_on_rank, args=(2, free_port(), str(output)), nprocs=2, join=True)

    parallel = load_file(str(output))
    assert set(parallel) == {*single, "rows_trained"}
    for name, tensor in single.items():
        torch.testing.assert_close(parallel[name], tensor, rtol=1e-5, atol=1e-6)
    assert int(parallel["rows_trained"]) == 3 * 100 // 2  # rank 0 trained on half the rows, not all
