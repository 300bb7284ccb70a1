"""Mixed precision: the forward pass really runs in bfloat16 inside autocast, and the flag turns it off."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from cinesync.data.dataset import Dataset, build_dataset
from cinesync.interfaces import ComponentConfig
from cinesync.train.precision import resolve_precision
from cinesync.train.torch_model import TorchRecommender
from cinesync.train.trainer import TrainerConfig


def tiny_dataset() -> Dataset:
    rng = np.random.default_rng(0)
    rows = [(u, int(i)) for u in range(12) for i in rng.choice(10, size=4, replace=False)]
    return build_dataset("tiny", pd.DataFrame(rows, columns=["user", "item"]))


class LinearScorer(TorchRecommender):
    """User embeddings through a linear layer to item logits; records the dtype of each linear output."""

    class Config(ComponentConfig):
        pass

    def __init__(self, config: ComponentConfig | None = None, **params: object) -> None:
        super().__init__(config, **params)
        self.output_dtypes: list[torch.dtype] = []

    def build_module(self, n_users: int, n_items: int) -> nn.Module:
        module = nn.Sequential(nn.Embedding(n_users, 8), nn.Linear(8, n_items))
        module[1].register_forward_hook(lambda _m, _i, output: self.output_dtypes.append(output.dtype))
        return module

    def training_examples(self, dataset: Dataset) -> dict[str, torch.Tensor]:
        users, items = dataset.user_item_pairs()
        return {"users": torch.tensor(users), "items": torch.tensor(items)}

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self.trained_module(batch["users"])
        return nn.functional.cross_entropy(logits.float(), batch["items"])

    def score(
        self, users: torch.Tensor, items: torch.Tensor | None = None, context: object = None
    ) -> torch.Tensor:
        scores = self.trained_module(users).float()
        return scores if items is None else scores[:, items]


def config(**fields: object) -> TrainerConfig:
    return TrainerConfig(progress=False, device="cpu", early_stopping_metric=None, epochs=1, **fields)


def test_autocast_runs_the_forward_pass_in_bfloat16() -> None:
    model = LinearScorer().fit(tiny_dataset(), trainer=config(mixed_precision="bf16"))

    assert model.output_dtypes and set(model.output_dtypes) == {torch.bfloat16}
    assert all(
        p.dtype == torch.float32 for p in model.trained_module.parameters()
    )  # master weights stay fp32


def test_mixed_precision_off_runs_in_float32() -> None:
    model = LinearScorer().fit(tiny_dataset(), trainer=config(mixed_precision="off"))

    assert set(model.output_dtypes) == {torch.float32}


def test_scoring_after_training_is_not_autocast() -> None:
    model = LinearScorer().fit(tiny_dataset(), trainer=config(mixed_precision="bf16"))
    model.output_dtypes.clear()

    model.score(torch.tensor([0, 1]))

    assert model.output_dtypes == [torch.float32]


@pytest.mark.parametrize(
    ("mode", "dtype", "scaled"),
    [("off", None, False), ("bf16", torch.bfloat16, False), ("fp16", torch.float16, True)],
)
def test_precision_settings_resolve_to_a_dtype_and_scaling(
    mode: str, dtype: torch.dtype | None, scaled: bool
) -> None:
    precision = resolve_precision(mode, torch.device("cpu"))

    assert (precision.dtype, precision.scale_gradients) == (dtype, scaled)


def test_auto_on_cpu_uses_bfloat16_only_with_native_support(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("cinesync.train.precision.cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", torch.device("cpu")).dtype is None
    monkeypatch.setattr("cinesync.train.precision.cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", torch.device("cpu")).dtype == torch.bfloat16
