"""The shared Trainer and the TorchRecommender base, exercised through BPR-MF on tiny generated data."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import torch

from cinesync.data.dataset import Dataset, build_dataset
from cinesync.data.splits import Split, leave_last_out
from cinesync.errors import CineSyncError
from cinesync.evaluation import evaluate
from cinesync.train.torch_model import TorchRecommender
from cinesync.train.trainer import Callback, EarlyStopping, Trainer, TrainerConfig
from cinesync_plugins.recommenders.bpr_mf import BPRMF


def planted_split(n_users: int = 40, n_items: int = 30, per_user: int = 8) -> Split:
    """Two taste groups (even users like the first half of the items), split leave-last-out by time."""
    rng = np.random.default_rng(0)
    half = n_items // 2
    rows = [
        (user, int(item) + (0 if user % 2 == 0 else half), order)
        for user in range(n_users)
        for order, item in enumerate(rng.choice(half, size=per_user, replace=False))
    ]
    dataset = build_dataset("planted", pd.DataFrame(rows, columns=["user", "item", "timestamp"]))
    return leave_last_out(dataset)


def config(**fields: object) -> TrainerConfig:
    return TrainerConfig(progress=False, device="cpu", **fields)


def weights(model: TorchRecommender) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in model.trained_module.state_dict().items()}


class ScriptedValidation:
    """Stands in for Trainer.validation_score: returns ``scores`` in turn and keeps the weights it saw.

    Patched onto the class as an instance (not a function), so it is called without the trainer.
    """

    def __init__(self, scores: list[float]) -> None:
        self.scores = iter(scores)
        self.seen: list[dict[str, torch.Tensor]] = []

    def __call__(self, model: TorchRecommender, validation: Dataset) -> float:
        self.seen.append(weights(model))
        return next(self.scores)


def test_without_validation_it_runs_exactly_the_configured_epochs() -> None:
    split = planted_split()
    model = BPRMF(dim=4).fit(split.train, trainer=config(epochs=4))

    assert model.training_report is not None
    assert [epoch["epoch"] for epoch in model.training_report.history] == [1, 2, 3, 4]
    assert all(epoch["metric"] is None for epoch in model.training_report.history)
    assert model.fit_info["epochs_run"] == model.fit_info["best_epoch"] == 4
    assert model.fit_info["best_validation"] is None


def test_history_records_loss_time_throughput_and_memory() -> None:
    split = planted_split()
    model = BPRMF(dim=4).fit(split.train, trainer=config(epochs=2))

    assert model.training_report is not None
    for epoch in model.training_report.history:
        assert epoch["loss"] > 0 and epoch["seconds"] > 0
        assert epoch["examples_per_second"] > 0 and epoch["peak_memory_mb"] > 0


def test_early_stopping_stops_after_patience_and_restores_the_best_weights(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    split = planted_split()
    validation = ScriptedValidation([0.1, 0.3, 0.2, 0.25, 0.29, 0.9])
    monkeypatch.setattr(Trainer, "validation_score", validation)

    model = BPRMF(dim=4).fit(split.train, validation=split.valid, trainer=config(epochs=10, patience=3))

    assert model.training_report is not None
    assert model.training_report.epochs_run == 5
    assert (model.training_report.best_epoch, model.training_report.best_score) == (2, 0.3)
    assert model.fit_info == {**model.fit_info, "epochs_run": 5, "best_epoch": 2, "best_validation": 0.3}
    for name, tensor in weights(model).items():
        torch.testing.assert_close(tensor, validation.seen[1][name], rtol=0, atol=0)


def test_evaluation_happens_every_eval_every_epochs(monkeypatch: pytest.MonkeyPatch) -> None:
    split = planted_split()
    monkeypatch.setattr(Trainer, "validation_score", ScriptedValidation([0.1, 0.2, 0.3]))

    model = BPRMF(dim=4).fit(split.train, validation=split.valid, trainer=config(epochs=6, eval_every=2))

    assert model.training_report is not None
    assert [epoch["metric"] for epoch in model.training_report.history] == [None, 0.1, None, 0.2, None, 0.3]


def test_early_stopping_follows_the_metric_direction() -> None:
    stopping = EarlyStopping(patience=1, higher_is_better=False)
    stopping.best_score = 0.5

    assert stopping.improves(0.4)
    assert not stopping.improves(0.6)


def test_the_restored_weights_score_what_validation_measured() -> None:
    split = planted_split()
    model = BPRMF(dim=4).fit(
        split.train, validation=split.valid, trainer=config(epochs=8, patience=2, learning_rate=0.05)
    )

    measured = evaluate(model, split.valid, metrics=["ndcg@10"]).metrics["ndcg@10"]

    assert model.fit_info["best_validation"] == pytest.approx(measured)


def test_the_same_seed_trains_identical_weights_and_another_seed_does_not() -> None:
    split = planted_split()
    first = weights(BPRMF(dim=4).fit(split.train, trainer=config(epochs=2, seed=7)))
    again = weights(BPRMF(dim=4).fit(split.train, trainer=config(epochs=2, seed=7)))
    other = weights(BPRMF(dim=4).fit(split.train, trainer=config(epochs=2, seed=8)))

    for name in first:
        torch.testing.assert_close(first[name], again[name], rtol=0, atol=0)
    assert not torch.equal(first["users.weight"], other["users.weight"])


def test_max_seconds_ends_training_after_the_epoch_in_which_it_ran_out() -> None:
    split = planted_split()
    model = BPRMF(dim=4).fit(split.train, trainer=config(epochs=50, max_seconds=1e-6))

    assert model.fit_info["epochs_run"] == 1


def test_fields_set_in_the_trainer_override_only_those_model_defaults() -> None:
    model = BPRMF()
    defaults = model.default_trainer()

    merged = model.training_config(TrainerConfig(epochs=3))

    assert merged.epochs == 3
    assert merged.learning_rate == defaults.learning_rate and merged.optimizer == defaults.optimizer


def test_callbacks_see_every_epoch_and_can_stop_training() -> None:
    class StopAtTwo(Callback):
        def __init__(self) -> None:
            self.epochs: list[int] = []

        def on_epoch_end(self, trainer: Trainer, model: TorchRecommender, record: dict[str, object]) -> None:
            self.epochs.append(int(record["epoch"]))  # type: ignore[call-overload]
            trainer.stop_training = record["epoch"] == 2

    split = planted_split()
    model = BPRMF(dim=4).fit(split.train, trainer=config(epochs=1))
    callback = StopAtTwo()

    report = Trainer(config(epochs=5), callbacks=[callback]).fit(model, split.train)

    assert callback.epochs == [1, 2] and report.epochs_run == 2


class DivergingBPR(BPRMF):
    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return super().loss(batch) * float("nan")


def test_a_diverging_loss_is_an_error_that_says_what_to_do() -> None:
    split = planted_split()

    with pytest.raises(CineSyncError, match="lower the learning rate"):
        DivergingBPR(dim=4).fit(split.train, trainer=config(epochs=2))


def test_batches_cover_every_training_pair_once_per_epoch() -> None:
    split = planted_split()
    model = BPRMF(dim=4, negatives=3)
    batches: Iterator[dict[str, torch.Tensor]] = model.training_batches(split.train, 16, torch.Generator())

    pairs = [
        (int(u), int(i)) for batch in batches for u, i in zip(batch["users"], batch["positives"], strict=True)
    ]
    users, items = split.train.user_item_pairs()

    assert sorted(pairs) == sorted(zip(users.tolist(), items.tolist(), strict=True))
