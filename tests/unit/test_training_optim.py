"""Optimisation options of the trainer: decay groups, layer-wise learning rates, schedules, accumulation,
clipping."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from cinesync.data.dataset import Dataset, build_dataset
from cinesync.train.optim import make_optimizer, no_decay_names, parameter_groups, schedule_factor
from cinesync.train.trainer import TrainerConfig
from cinesync_plugins.recommenders.bpr_mf import BPRMF


def tiny_dataset(n_users: int = 12, n_items: int = 10) -> Dataset:
    rng = np.random.default_rng(0)
    rows = [(u, int(i)) for u in range(n_users) for i in rng.choice(n_items, size=4, replace=False)]
    return build_dataset("tiny", pd.DataFrame(rows, columns=["user", "item"]))


def config(**fields: object) -> TrainerConfig:
    return TrainerConfig(progress=False, device="cpu", early_stopping_metric=None, **fields)


class Tower(nn.Module):
    """An embedding table, a normalised hidden layer and an output layer: one of each parameter class."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(10, 4)
        self.hidden = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.output = nn.Linear(4, 1)


def test_embeddings_biases_and_norms_get_no_weight_decay_by_default() -> None:
    groups = {
        name
        for group in parameter_groups(Tower(), config(weight_decay=0.1))
        for name in [group["name"]] * len(group["params"])
        if group["weight_decay"] == 0
    }
    spared = no_decay_names(Tower(), config().no_decay)

    assert spared == {"embedding.weight", "hidden.bias", "norm.weight", "norm.bias", "output.bias"}
    assert groups == {"all/no_decay"}


def test_adamw_decays_linear_weights_but_leaves_embedding_tables_alone() -> None:
    torch.manual_seed(0)
    tower = Tower()
    before = {name: p.detach().clone() for name, p in tower.named_parameters()}
    optimizer = make_optimizer(tower, config(optimizer="adamw", weight_decay=0.5, learning_rate=0.1))
    for parameter in tower.parameters():
        parameter.grad = torch.zeros_like(parameter)  # decay alone moves the weights

    optimizer.step()

    after = dict(tower.named_parameters())
    torch.testing.assert_close(after["embedding.weight"], before["embedding.weight"], rtol=0, atol=0)
    torch.testing.assert_close(after["hidden.weight"], before["hidden.weight"] * (1 - 0.1 * 0.5))


def test_decaying_embeddings_is_an_explicit_choice() -> None:
    spared = no_decay_names(Tower(), ["biases"])

    assert "embedding.weight" not in spared and "norm.weight" in spared


def test_layer_lr_decay_follows_the_named_layer_groups_from_input_to_output() -> None:
    class Declared(Tower):
        def layer_groups(self) -> list[tuple[str, list[str]]]:
            return [("input", ["embedding."]), ("body", ["hidden.", "norm."]), ("head", ["output."])]

    groups = parameter_groups(Declared(), config(learning_rate=1.0, layer_lr_decay=0.5))
    rate = {group["name"]: group["lr"] for group in groups}

    assert rate == {
        "input/no_decay": 0.25,
        "body/decay": 0.5,
        "body/no_decay": 0.5,
        "head/decay": 1.0,
        "head/no_decay": 1.0,
    }


def test_without_declared_groups_each_top_level_child_is_a_layer_group() -> None:
    groups = parameter_groups(Tower(), config(learning_rate=1.0, layer_lr_decay=0.5))
    rate = {group["name"].split("/")[0]: group["lr"] for group in groups}

    assert rate == {"embedding": 0.125, "hidden": 0.25, "norm": 0.5, "output": 1.0}


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_warmup_rises_linearly_then_the_schedule_takes_over(schedule: str) -> None:
    settings = config(schedule=schedule, warmup_steps=4)
    factors = [schedule_factor(settings, step, 20) for step in range(20)]

    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    if schedule == "cosine":
        assert factors[4 + 8] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    if schedule == "constant":
        assert set(factors[4:]) == {1.0}
    else:  # decays to zero at the end of the run: the last of the 16 decaying steps keeps at most 1/16
        assert factors[-1] <= 1 / 16 and factors == sorted(factors[:4]) + sorted(factors[4:], reverse=True)


def test_the_learning_rate_in_the_log_follows_the_schedule() -> None:
    model = BPRMF(dim=4).fit(tiny_dataset(), trainer=config(epochs=4, batch_size=8, schedule="cosine"))
    assert model.training_report is not None
    rates = [epoch["learning_rate"] for epoch in model.training_report.history]

    assert rates == sorted(rates, reverse=True) and rates[-1] < 1e-6


def test_accumulating_two_half_batches_takes_the_step_of_the_whole_batch() -> None:
    data = tiny_dataset()
    whole = BPRMF(dim=4).fit(
        data, trainer=config(epochs=2, batch_size=16, optimizer="sgd", learning_rate=0.5)
    )
    halves = BPRMF(dim=4)  # same permutation and negatives, drawn as batches of 8
    settings = config(epochs=2, batch_size=8, optimizer="sgd", learning_rate=0.5, gradient_accumulation=2)
    halves.fit(data, trainer=settings)

    for name, tensor in whole.trained_module.state_dict().items():
        torch.testing.assert_close(halves.trained_module.state_dict()[name], tensor, rtol=1e-5, atol=1e-6)


def test_gradient_clipping_bounds_the_update() -> None:
    data = tiny_dataset()
    model = BPRMF(dim=4, init_std=1.0)
    settings = config(epochs=1, batch_size=1024, optimizer="sgd", learning_rate=1.0, clip_grad_norm=1e-3)
    torch.manual_seed(settings.seed)
    initial = {k: v.clone() for k, v in model.build_module(data.n_users, data.n_items).state_dict().items()}

    model.fit(data, trainer=settings)

    moved = torch.cat([(model.trained_module.state_dict()[k] - v).flatten() for k, v in initial.items()])
    assert 0 < moved.norm() <= 1e-3 + 1e-7
