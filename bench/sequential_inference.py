"""Batched inference of the sequential models: score every item for 1,000 histories, timed.

Usage::

    .venv/bin/python bench/sequential_inference.py --data-dir ../shared/data [--models sasrec gru4rec ...]

Each model is trained for one epoch on ml-100k's leave-last-out training split (the speed of scoring does not
depend on how well it is trained), then scores all 1,682 items for 1,000 histories in one call:
``recommend(sessions=..., k=10)`` over the last 50 items of 1,000 users' training sequences (943 users, so 57 are
drawn twice), with each session's own items excluded. Prints the median of 5 timed calls after one warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from cinesync import registry
from cinesync.data.loaders import load_dataset
from cinesync.data.splits import leave_last_out
from cinesync.train.trainer import TrainerConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--models", nargs="+", default=["sasrec"])
    parser.add_argument("--users", type=int, default=1000)
    args = parser.parse_args()
    train = leave_last_out(load_dataset("ml-100k", args.data_dir)).train
    sequences = train.sequences()
    rows = np.random.default_rng(0).choice(len(sequences), args.users, replace=args.users > len(sequences))
    sessions = [train.items.lookup(sequences[row][-50:].tolist()) for row in rows]
    print(f"| model | {args.users} sessions, all {train.n_items:,} items scored: median s of 5 |")
    print("| --- | --- |")
    for component in args.models:
        model = registry.build("recommender", component)
        model.fit(train, trainer=TrainerConfig(epochs=1, early_stopping_metric=None, progress=False))
        model.recommend(sessions=sessions, k=10)
        times = []
        for _ in range(5):
            started = time.perf_counter()
            model.recommend(sessions=sessions, k=10)
            times.append(time.perf_counter() - started)
        print(f"| {component} | {statistics.median(times):.3f} |")


if __name__ == "__main__":
    main()
