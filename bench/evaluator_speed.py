"""Time the full-ranking evaluator: random scores, 10 metrics at k in {5, 10, 20}.

The metrics mix accuracy (NDCG, recall, hit rate, MRR and AUC, which sorts every user's full score row),
catalogue metrics (coverage, Gini) and per-item ones (novelty, ARP, genre ILD over a random 20-genre matrix
passed as context).

Usage: ``python bench/evaluator_speed.py [--users 6000] [--items 10000]``; prints the seconds of the whole
evaluation and of the part outside the model's scoring. The target is under 10 s for 6,000 x 10,000 on two
cores; ``--users 610 --items 9724`` is the size of MovieLens ml-latest-small.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import pandas as pd
import torch

from cinesync.data.dataset import Dataset, build_dataset
from cinesync.evaluation import evaluate
from cinesync.interfaces import ComponentConfig, Metric, Recommender
from cinesync_plugins.metrics.arp import ARP
from cinesync_plugins.metrics.auc import AUC
from cinesync_plugins.metrics.coverage import Coverage
from cinesync_plugins.metrics.gini import Gini
from cinesync_plugins.metrics.hit_rate import HitRate
from cinesync_plugins.metrics.ild import ILD
from cinesync_plugins.metrics.mrr import MRR
from cinesync_plugins.metrics.ndcg import NDCG
from cinesync_plugins.metrics.novelty import Novelty
from cinesync_plugins.metrics.recall import Recall


class RandomScores(Recommender):
    """Uniform random scores; records the time spent scoring."""

    class Config(ComponentConfig):
        pass

    scoring_seconds = 0.0

    def _fit(self, dataset: Dataset, *, validation: Dataset | None, trainer: Any) -> None:
        pass

    def score(
        self, users: torch.Tensor, items: torch.Tensor | None = None, context: Any = None
    ) -> torch.Tensor:
        started = time.perf_counter()
        scores = torch.rand(len(users), self.n_items)
        self.scoring_seconds += time.perf_counter() - started
        return scores

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        pass


def synthetic(n_users: int, n_items: int, train_per_user: int, test_per_user: int) -> tuple[Dataset, Dataset]:
    rng = np.random.default_rng(0)
    per_user = train_per_user + test_per_user
    users = np.repeat(np.arange(n_users), per_user)
    items = rng.integers(0, n_items, size=len(users))
    items[:n_items] = np.arange(n_items)  # every item interacted with, so every item is indexed
    is_test = np.tile(np.arange(per_user) >= train_per_user, n_users)
    full = build_dataset("synthetic", pd.DataFrame({"user": users, "item": items}))
    return (
        full.with_interactions(full.interactions[~is_test], name="train"),
        full.with_interactions(full.interactions[is_test], name="test"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=6000)
    parser.add_argument("--items", type=int, default=10000)
    args = parser.parse_args()
    train, test = synthetic(args.users, args.items, train_per_user=50, test_per_user=10)
    model = RandomScores().fit(train)
    assert isinstance(model, RandomScores)
    metrics: list[Metric] = [
        NDCG(k=10),
        Recall(k=20),
        HitRate(k=5),
        MRR(),
        AUC(),
        Coverage(k=20),
        Novelty(k=10),
        ARP(k=10),
        Gini(k=20),
        ILD(k=10),
    ]
    genres = (torch.rand(args.items, 20, generator=torch.Generator().manual_seed(0)) < 0.15).float()
    result = evaluate(model, test, metrics=metrics, context={"item_genres": genres})
    print(
        f"{result.n_users} users x {model.n_items} items, {len(metrics)} metrics: {result.seconds:.2f} s "
        f"({result.seconds - model.scoring_seconds:.2f} s outside the model's scoring), "
        f"{torch.get_num_threads()} threads"
    )


if __name__ == "__main__":
    main()
