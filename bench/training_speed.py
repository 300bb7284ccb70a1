"""Training throughput of one recommender: float32 vs bfloat16 autocast, and 1 vs 2 gloo processes.

Usage::

    python bench/training_speed.py --component bpr_mf --dataset ml-100k --data-dir /work/shared/data

Trains ``--component`` (any registered TorchRecommender; ``--params '{"dim": 64}'`` for its config) on the
leave-last-out training split for ``--epochs`` epochs without validation, under each setting, and prints one
Markdown row per setting: examples/s (mean over the epochs after the first, which pays for warm-up) and wall
time of the whole ``fit``. The 2-process rows start two gloo processes on this machine with
``torch.multiprocessing`` (what ``torchrun --nproc_per_node=2`` does) with the same global batch; each process
gets ``cores / processes`` threads. Results go in docs/training.md; this is not part of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing

from cinesync.data.loaders import load_dataset
from cinesync.data.splits import leave_last_out
from cinesync.registry import build
from cinesync.train.trainer import TrainerConfig


def train_once(args: argparse.Namespace, precision: str) -> dict[str, Any]:
    """Fit once in this process; returns examples/s after the first epoch and the wall time."""
    train = leave_last_out(load_dataset(args.dataset, args.data_dir)).train
    model = build("recommender", args.component, **json.loads(args.params))
    settings: dict[str, Any] = {
        "epochs": args.epochs,
        "early_stopping_metric": None,
        "mixed_precision": precision,
        "progress": False,
        "device": "cpu",
    }
    if args.batch_size:
        settings["batch_size"] = args.batch_size
    started = time.perf_counter()
    model.fit(train, trainer=TrainerConfig.model_validate(settings))
    wall = time.perf_counter() - started
    history = model.training_report.history  # type: ignore[attr-defined]
    later = history[1:] or history
    return {
        "examples_per_second": sum(e["examples_per_second"] for e in later) / len(later),
        "wall_seconds": wall,
        "examples_per_epoch": history[0]["examples"],
    }


def _rank(rank: int, world: int, port: int, args: argparse.Namespace, precision: str, out: str) -> None:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        result = train_once(args, precision)
        if rank == 0:
            Path(out).write_text(json.dumps(result), encoding="utf-8")
    finally:
        torch.distributed.destroy_process_group()


def train_distributed(args: argparse.Namespace, precision: str, world: int) -> dict[str, Any]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    with tempfile.TemporaryDirectory() as folder:
        out = str(Path(folder) / "result.json")
        torch.multiprocessing.spawn(_rank, args=(world, port, args, precision, out), nprocs=world, join=True)
        return dict(json.loads(Path(out).read_text(encoding="utf-8")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--component", default="bpr_mf")
    parser.add_argument("--params", default="{}", help="the component's config as JSON")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None, help="global batch; default: the model's")
    args = parser.parse_args()

    print(
        f"{args.component} on {args.dataset}, {args.epochs} epochs, "
        f"{os.cpu_count()} CPU cores, torch {torch.__version__}"
    )
    print("| setting | processes | examples/s | wall s |")
    print("|---|---|---|---|")
    train_once(args, "off")  # warm-up: first-call costs (imports, allocator) are not the model's
    for precision in ("off", "bf16"):
        result = train_once(args, precision)
        print(f"| {precision} | 1 | {result['examples_per_second']:,.0f} | {result['wall_seconds']:.1f} |")
    result = train_distributed(args, "off", 2)
    print(f"| off, gloo | 2 | {result['examples_per_second']:,.0f} | {result['wall_seconds']:.1f} |")


if __name__ == "__main__":
    main()
