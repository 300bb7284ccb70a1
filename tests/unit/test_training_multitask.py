"""Multi-task training: BPR ranking + rating regression on one set of embeddings, uncertainty-weighted."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cinesync.data.dataset import build_dataset
from cinesync.data.splits import Split, leave_last_out
from cinesync.errors import CineSyncError
from cinesync.train.multitask import TaskWeighting
from cinesync.train.trainer import TaskConfig, Trainer, TrainerConfig
from cinesync_plugins.recommenders.bpr_mf import BPRMF


def rated_split() -> Split:
    """Users rate items 1-5 with a user and an item effect; timestamps give the leave-last-out order."""
    rng = np.random.default_rng(0)
    rows = [
        (u, int(i), order, float(np.clip(round(3 + (u % 3 - 1) + (i % 2) + rng.normal(0, 0.3)), 1, 5)))
        for u in range(30)
        for order, i in enumerate(rng.choice(20, size=6, replace=False))
    ]
    frame = pd.DataFrame(rows, columns=["user", "item", "timestamp", "rating"])
    return leave_last_out(build_dataset("rated", frame))


def config(**fields: object) -> TrainerConfig:
    options: dict[str, object] = {
        "progress": False,
        "device": "cpu",
        "early_stopping_metric": None,
        "batch_size": 32,
    }
    return TrainerConfig.model_validate({**options, **fields})


UNCERTAINTY = [TaskConfig(name="ranking"), TaskConfig(name="rating", loss="mse", metric="rmse")]


def test_the_model_exposes_its_task_heads() -> None:
    assert BPRMF().task_heads() == {"ranking": "bpr"}
    assert BPRMF(rating_head=True).task_heads() == {"ranking": "bpr", "rating": "mse"}


def test_uncertainty_weights_are_optimised_and_change_during_training() -> None:
    split = rated_split()
    model = BPRMF(dim=8, rating_head=True)
    trainer = Trainer(config(epochs=8, learning_rate=0.05, tasks=UNCERTAINTY))
    model.fit(split.train, trainer=config(epochs=1))

    report = trainer.fit(model, split.train, split.valid)

    assert trainer.optimizer is not None and trainer.task_weighting is not None
    in_optimizer = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    assert any(p is trainer.task_weighting.log_variances for p in in_optimizer)
    first, last = report.history[0]["task_weights"], report.history[-1]["task_weights"]
    assert first["ranking"] != pytest.approx(last["ranking"]) and first["rating"] != pytest.approx(
        last["rating"]
    )
    # The rating loss (squared error on a 1-5 scale) starts far larger, so its variance grows: less weight.
    assert last["rating"] < first["rating"]
    assert set(report.history[-1]["task_losses"]) == {"ranking", "rating"}
    assert model.fit_info["task_weights"] == last


def test_the_rating_head_learns_and_its_metric_is_logged() -> None:
    split = rated_split()
    model = BPRMF(dim=8, rating_head=True).fit(
        split.train, validation=split.valid, trainer=config(epochs=7, learning_rate=0.05, tasks=UNCERTAINTY)
    )
    assert model.training_report is not None
    rmse = [epoch["task_metrics"]["rating"] for epoch in model.training_report.history]

    assert rmse[-1] < 0.5 * rmse[0]


def test_early_stopping_can_follow_a_task_metric() -> None:
    split = rated_split()
    settings = config(epochs=3, tasks=UNCERTAINTY, early_stopping_metric="rmse")
    model = BPRMF(dim=4, rating_head=True).fit(split.train, validation=split.valid, trainer=settings)

    assert model.fit_info["best_validation"] == pytest.approx(
        model.task_metric("rating", "rmse", split.valid), rel=1e-5
    )


def test_fixed_weights_sum_the_weighted_losses() -> None:
    weighting = TaskWeighting([TaskConfig(name="a", weight=2.0), TaskConfig(name="b", weight=0.5)])

    total = weighting({"a": torch.tensor(3.0), "b": torch.tensor(4.0)})

    assert float(total) == pytest.approx(8.0)


def test_uncertainty_weighting_follows_kendall_et_al() -> None:
    weighting = TaskWeighting([TaskConfig(name="rank", loss="bpr"), TaskConfig(name="rate", loss="mse")])
    with torch.no_grad():
        weighting.log_variances.copy_(torch.tensor([1.0, -1.0]))

    total = weighting({"rank": torch.tensor(2.0), "rate": torch.tensor(3.0)})

    expected = np.exp(-1) * 2 + 0.5 + 0.5 * np.exp(1) * 3 - 0.5
    assert total.item() == pytest.approx(expected)


def test_tasks_that_are_not_heads_of_the_model_are_named_in_the_error() -> None:
    split = rated_split()
    settings = config(epochs=1, tasks=[TaskConfig(name="ranking"), TaskConfig(name="click")])

    with pytest.raises(CineSyncError, match="'click' is not a head of BPRMF"):
        BPRMF(dim=4, rating_head=True).fit(split.train, trainer=settings)


def test_the_training_table_of_a_manifest_declares_tasks() -> None:
    table = {
        "tasks": [{"name": "ranking"}, {"name": "rating", "loss": "mse", "weight": 0.5, "metric": "rmse"}],
        "curriculum": {"difficulty": "item_popularity", "pacing": "root"},
    }

    settings = TrainerConfig.model_validate(table)

    assert settings.tasks[1].weight == 0.5 and settings.curriculum is not None
    assert BPRMF().training_config(settings).tasks == settings.tasks
