"""Curriculum learning: pacing fractions, and an epoch's sampled examples moving from easy to hard."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from cinesync.data.dataset import Dataset, build_dataset
from cinesync.errors import CineSyncError
from cinesync.train.curriculum import curriculum_order, pacing_fraction
from cinesync.train.torch_model import TorchRecommender
from cinesync.train.trainer import Callback, CurriculumConfig, Trainer, TrainerConfig
from cinesync_plugins.recommenders.bpr_mf import BPRMF


def skewed_dataset() -> Dataset:
    """Item popularity falls steeply with the item index; user history lengths vary from 2 to 9."""
    rng = np.random.default_rng(0)
    weights = 1 / np.arange(1, 31) ** 1.2
    rows = [
        (u, int(i))
        for u in range(40)
        for i in rng.choice(30, size=2 + u % 8, replace=False, p=weights / weights.sum())
    ]
    return build_dataset("skewed", pd.DataFrame(rows, columns=["user", "item"]))


class SampledItems(Callback):
    """Records, per epoch, the popularity of the items the trainer sampled and the share admitted."""

    def __init__(self, counts: np.ndarray) -> None:
        self.counts = counts
        self.mean_popularity: list[float] = []
        self.fractions: list[float] = []

    def on_epoch_end(self, trainer: Trainer, model: TorchRecommender, record: dict[str, Any]) -> None:
        assert trainer.examples is not None and trainer.order is not None
        items = trainer.examples["items"][trainer.order].numpy()
        self.mean_popularity.append(float(self.counts[items].mean()))
        self.fractions.append(record["fraction"])


def config(**fields: object) -> TrainerConfig:
    return TrainerConfig(progress=False, device="cpu", early_stopping_metric=None, batch_size=16, **fields)


@pytest.mark.parametrize(
    ("pacing", "expected"),
    [("linear", [0.2, 0.6, 1.0, 1.0]), ("root", [0.2, 0.721, 1.0, 1.0]), ("step", [0.2, 0.2, 1.0, 1.0])],
)
def test_pacing_admits_more_examples_each_epoch(pacing: str, expected: list[float]) -> None:
    curriculum = CurriculumConfig(difficulty="loss", pacing=pacing, start_fraction=0.2, full_at_epoch=3)

    assert [round(pacing_fraction(curriculum, epoch), 3) for epoch in (1, 2, 3, 4)] == expected


def test_the_order_keeps_the_easiest_fraction_shuffled() -> None:
    difficulty = torch.tensor([5.0, 1.0, 4.0, 2.0, 3.0, 0.0])

    order = curriculum_order(difficulty, 0.5, torch.Generator().manual_seed(0))

    assert sorted(order.tolist()) == [1, 3, 5]


def test_item_popularity_curriculum_samples_popular_items_first_then_everything() -> None:
    data = skewed_dataset()
    seen = SampledItems(data.item_counts())
    curriculum = CurriculumConfig(difficulty="item_popularity", start_fraction=0.25, full_at_epoch=4)
    model = BPRMF(dim=4).fit(data, trainer=config(epochs=1))

    Trainer(config(epochs=5, curriculum=curriculum), callbacks=[seen]).fit(model, data)

    assert seen.fractions[0] == pytest.approx(0.25, abs=0.01) and seen.fractions[3:] == [1.0, 1.0]
    assert (
        seen.mean_popularity[0] > seen.mean_popularity[1] > seen.mean_popularity[2] > seen.mean_popularity[3]
    )
    assert seen.mean_popularity[3] == pytest.approx(seen.mean_popularity[4])


def test_sequence_length_curriculum_starts_with_short_histories() -> None:
    data = skewed_dataset()
    lengths: list[float] = []

    class HistoryLengths(Callback):
        def on_epoch_end(self, trainer: Trainer, model: TorchRecommender, record: dict[str, Any]) -> None:
            assert trainer.examples is not None and trainer.order is not None
            users = trainer.examples["users"][trainer.order].numpy()
            lengths.append(float(data.user_counts()[users].mean()))

    curriculum = CurriculumConfig(difficulty="sequence_length", start_fraction=0.3, full_at_epoch=3)
    model = BPRMF(dim=4).fit(data, trainer=config(epochs=1))
    Trainer(config(epochs=3, curriculum=curriculum), callbacks=[HistoryLengths()]).fit(model, data)

    assert lengths[0] < lengths[1] < lengths[2]


def test_loss_curriculum_admits_the_examples_the_model_finds_easiest() -> None:
    data = skewed_dataset()
    curriculum = CurriculumConfig(difficulty="loss", start_fraction=0.5, full_at_epoch=3)
    model = BPRMF(dim=4).fit(data, trainer=config(epochs=1))
    settings = config(epochs=1, curriculum=curriculum)
    trainer = Trainer(settings)

    trainer.fit(model, data)

    assert trainer.order is not None and trainer.examples is not None
    assert len(trainer.order) == pytest.approx(0.5 * len(trainer.examples["users"]), abs=1)


class BatchesOnly(BPRMF):
    """A model of the older kind: it yields its own batches and exposes no examples."""

    training_examples = TorchRecommender.training_examples  # type: ignore[assignment]

    def training_batches(
        self, dataset: Dataset, batch_size: int, generator: torch.Generator
    ) -> Iterator[dict[str, torch.Tensor]]:
        users, items = dataset.user_item_pairs()
        negatives = torch.randint(0, dataset.n_items, (len(users), 1), generator=generator)
        yield {"users": torch.tensor(users), "positives": torch.tensor(items), "negatives": negatives}


def test_a_model_with_only_training_batches_still_trains() -> None:
    model = BatchesOnly(dim=4).fit(skewed_dataset(), trainer=config(epochs=2))

    assert model.fit_info["epochs_run"] == 2


def test_a_curriculum_needs_the_example_protocol() -> None:
    curriculum = CurriculumConfig(difficulty="item_popularity")

    with pytest.raises(CineSyncError, match="implement training_examples"):
        BatchesOnly(dim=4).fit(skewed_dataset(), trainer=config(epochs=2, curriculum=curriculum))
