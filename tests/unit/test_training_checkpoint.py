"""Checkpoints and the training log: safe formats, atomic pointers, exact resumption after a kill."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from cinesync.data.dataset import Dataset, build_dataset
from cinesync.data.splits import Split, leave_last_out
from cinesync.train.checkpoint import checkpoint_path, load_checkpoint
from cinesync.train.torch_model import TorchRecommender
from cinesync.train.trainer import (
    TRAINING_LOG,
    Callback,
    CurriculumConfig,
    TaskConfig,
    Trainer,
    TrainerConfig,
)
from cinesync_plugins.recommenders.bpr_mf import BPRMF


def rated_split() -> Split:
    rng = np.random.default_rng(0)
    rows = [
        (u, int(i), order, float(1 + (u + i) % 5))
        for u in range(24)
        for order, i in enumerate(rng.choice(16, size=6, replace=False))
    ]
    return leave_last_out(
        build_dataset("rated", pd.DataFrame(rows, columns=["user", "item", "timestamp", "rating"]))
    )


class Killed(Exception):
    """Stands in for the process dying."""


class KillAtStep(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer: Trainer, model: TorchRecommender, step: int) -> None:
        if step == self.step:
            raise Killed


def weights(model: TorchRecommender) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in model.trained_module.state_dict().items()}


def settings(directory: Path | None, **fields: Any) -> TrainerConfig:
    """Every stateful option at once: AdamW with decay, warm-up + cosine, accumulation, clipping, learned
    task weights, a loss curriculum, checkpoints every 3 steps."""
    options: dict[str, Any] = {
        "progress": False,
        "device": "cpu",
        "early_stopping_metric": None,
        "epochs": 4,
        "batch_size": 16,
        "optimizer": "adamw",
        "weight_decay": 0.01,
        "learning_rate": 0.02,
        "schedule": "cosine",
        "warmup_steps": 3,
        "gradient_accumulation": 2,
        "clip_grad_norm": 1.0,
        "tasks": [TaskConfig(name="ranking"), TaskConfig(name="rating", loss="mse")],
        "curriculum": CurriculumConfig(difficulty="loss", start_fraction=0.5, full_at_epoch=3),
        "checkpoint_dir": None if directory is None else str(directory),
        "checkpoint_every_steps": None if directory is None else 3,
        "seed": 3,
    }
    return TrainerConfig(**{**options, **fields})


def fresh_model(data: Dataset, config: TrainerConfig) -> BPRMF:
    """A model whose module is built as ``fit`` builds it, ready for ``Trainer.fit``."""
    model = BPRMF(dim=8, rating_head=True)
    model.fit(
        data,
        trainer=config.model_copy(
            update={"epochs": 1, "checkpoint_dir": None, "checkpoint_every_steps": None}
        ),
    )
    torch.manual_seed(config.seed)
    model.module = model.build_module(data.n_users, data.n_items)
    return model


def test_a_run_killed_mid_epoch_and_resumed_reaches_the_uninterrupted_weights(tmp_path: Path) -> None:
    data = rated_split().train
    uninterrupted = fresh_model(data, settings(None))
    Trainer(settings(None)).fit(uninterrupted, data)

    killed = fresh_model(data, settings(tmp_path))
    with pytest.raises(Killed):
        Trainer(settings(tmp_path), callbacks=[KillAtStep(7)]).fit(killed, data)
    state = load_checkpoint(tmp_path)
    assert state is not None and state.state["position"]["batch"] > 0  # the kill came mid-epoch
    resumed = fresh_model(data, settings(tmp_path))
    report = Trainer(settings(tmp_path, resume=True)).fit(resumed, data)

    assert report.resumed_from == 6
    for name, tensor in weights(uninterrupted).items():
        torch.testing.assert_close(weights(resumed)[name], tensor, rtol=0, atol=0)
    assert [e["epoch"] for e in report.history] == [1, 2, 3, 4]


def test_checkpoints_are_safetensors_and_json_behind_an_atomic_pointer(tmp_path: Path) -> None:
    data = rated_split().train
    Trainer(settings(tmp_path, epochs=2)).fit(fresh_model(data, settings(tmp_path)), data)

    latest = checkpoint_path(tmp_path, "latest")
    assert latest is not None and latest.name == "epoch-00002"
    assert sorted(p.name for p in latest.iterdir()) == [
        "model.safetensors",
        "optimizer.json",
        "optimizer.safetensors",
        "trainer.json",
        "trainer.safetensors",
    ]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
        "epoch-00002"
    ]  # superseded ones removed
    restored = load_checkpoint(tmp_path)
    assert restored is not None and "task_weighting.log_variances" in restored.tensors
    assert restored.optimizer["state"] and restored.state["position"] == {"epoch": 3, "batch": 0, "step": 5}


def test_the_best_validation_epoch_is_checkpointed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    split = rated_split()
    scores = iter([0.1, 0.5, 0.2])
    monkeypatch.setattr(Trainer, "validation_score", lambda self, model, validation: next(scores))
    config = settings(tmp_path, epochs=3).model_copy(update={"early_stopping_metric": "ndcg@10"})
    model = fresh_model(split.train, config)
    seen: dict[int, dict[str, torch.Tensor]] = {}

    class Remember(Callback):
        def on_epoch_end(self, trainer: Trainer, model: TorchRecommender, record: dict[str, Any]) -> None:
            seen[record["epoch"]] = weights(model)

    Trainer(config, callbacks=[Remember()]).fit(model, split.train, split.valid)

    best = load_checkpoint(tmp_path, "best")
    assert best is not None and checkpoint_path(tmp_path, "best") == tmp_path / "best-epoch-00002"
    for name, tensor in seen[2].items():
        torch.testing.assert_close(best.model[name], tensor, rtol=0, atol=0)


def test_the_training_log_has_one_json_line_per_epoch(tmp_path: Path) -> None:
    data = rated_split().train
    Trainer(settings(tmp_path, epochs=3)).fit(fresh_model(data, settings(tmp_path)), data)

    lines = [json.loads(line) for line in (tmp_path / TRAINING_LOG).read_text().splitlines()]

    assert [line["epoch"] for line in lines] == [1, 2, 3]
    for line in lines:
        assert {"loss", "learning_rate", "seconds", "examples_per_second", "peak_memory_mb"} <= set(line)
        assert set(line["task_losses"]) == set(line["task_weights"]) == {"ranking", "rating"}
    assert lines[0]["fraction"] == pytest.approx(0.5, abs=0.02) and lines[2]["fraction"] == 1.0


def test_resume_without_a_checkpoint_starts_from_the_beginning(tmp_path: Path) -> None:
    data = rated_split().train
    report = Trainer(settings(tmp_path, epochs=1, resume=True)).fit(
        fresh_model(data, settings(tmp_path)), data
    )

    assert report.resumed_from is None and report.epochs_run == 1


def test_resume_needs_a_checkpoint_dir() -> None:
    with pytest.raises(ValueError, match="resume = true needs a checkpoint_dir"):
        TrainerConfig(resume=True)
