"""Properties of the recurrent and attentive sequential models that their conformance checks would not catch."""

from __future__ import annotations

import math

import pytest
import torch

from cinesync.testing.conformance import toy_dataset
from cinesync.train.trainer import TrainerConfig
from cinesync_plugins.recommenders._recurrent import RecurrentEncoder
from cinesync_plugins.recommenders._sequential import SequentialRecommender, left_padded
from cinesync_plugins.recommenders.attentional_sequential import AttentionalSequential, NARMEncoder
from cinesync_plugins.recommenders.gru4rec import GRU4Rec
from cinesync_plugins.recommenders.hierarchical_sequential import HierarchicalEncoder, HierarchicalSequential
from cinesync_plugins.recommenders.lstm_sequential import LSTMSequential

MODELS = [GRU4Rec, LSTMSequential, AttentionalSequential, HierarchicalSequential]


def encoders() -> list[torch.nn.Module]:
    """One small encoder of each kind, in eval mode (no dropout), with fixed weights."""
    torch.manual_seed(0)
    built: list[torch.nn.Module] = [
        RecurrentEncoder(12, 8, "gru", layers=2),
        RecurrentEncoder(12, 8, "lstm", layers=2),
        NARMEncoder(12, 8, embedding_dropout=0.0, dropout=0.0),
        HierarchicalEncoder(12, 8, 3, "attention", embedding_dropout=0.0, dropout=0.0),
        HierarchicalEncoder(12, 8, 3, "mean", embedding_dropout=0.0, dropout=0.0),
    ]
    return [encoder.eval() for encoder in built]


ENCODER_NAMES = ["gru", "lstm", "narm", "hierarchical-attention", "hierarchical-mean"]


def epochs(n: int, learning_rate: float = 1e-3) -> TrainerConfig:
    return TrainerConfig(
        epochs=n, batch_size=16, learning_rate=learning_rate, progress=False, early_stopping_metric=None
    )


@pytest.fixture(scope="module")
def fitted() -> dict[type, SequentialRecommender]:
    """Each model fitted for a few epochs on the toy dataset (shared: fitting is the slow part)."""
    return {model_class: model_class(dim=16).fit(toy_dataset(), trainer=epochs(6)) for model_class in MODELS}


@pytest.mark.parametrize("encoder", encoders(), ids=ENCODER_NAMES)
def test_left_padding_does_not_change_the_states(encoder: torch.nn.Module) -> None:
    unpadded = torch.tensor([[3, 5, 2, 7]])
    padded = torch.tensor([[0, 0, 0, 3, 5, 2, 7]])
    with torch.no_grad():
        assert torch.allclose(encoder.final(unpadded), encoder.final(padded), atol=1e-6)
        assert torch.allclose(encoder.states(unpadded)[0], encoder.states(padded)[0, 3:], atol=1e-6)


@pytest.mark.parametrize("encoder", encoders(), ids=ENCODER_NAMES)
def test_the_state_at_a_position_does_not_depend_on_later_items(encoder: torch.nn.Module) -> None:
    sequence = torch.tensor([[0, 0, 4, 9, 1, 6, 3, 8]])
    changed = sequence.clone()
    changed[0, 5:] = torch.tensor([11, 2, 5])
    with torch.no_grad():
        before, after = encoder.states(sequence), encoder.states(changed)
    assert torch.allclose(before[0, :5], after[0, :5], atol=1e-6)
    assert not torch.allclose(before[0, 5:], after[0, 5:], atol=1e-4)


@pytest.mark.parametrize("encoder", encoders(), ids=ENCODER_NAMES)
def test_the_final_state_is_the_state_at_the_last_position(encoder: torch.nn.Module) -> None:
    sequence = torch.tensor([[0, 0, 4, 9, 1, 6], [7, 3, 2, 10, 5, 1]])
    with torch.no_grad():
        assert torch.allclose(encoder.final(sequence), encoder.states(sequence)[:, -1], atol=1e-6)


def test_narm_attention_weights_sum_to_one_over_real_earlier_positions() -> None:
    encoder = NARMEncoder(12, 8, embedding_dropout=0.0, dropout=0.0).eval()
    inputs = torch.tensor([[0, 0, 4, 9, 1, 6], [7, 3, 2, 10, 5, 1]])
    positions = torch.arange(inputs.shape[1])
    with torch.no_grad():
        weights = encoder.attention_weights(encoder.hidden_states(inputs), inputs, positions)
    real_queries = inputs != 0
    assert torch.allclose(weights.sum(-1)[real_queries], torch.ones(int(real_queries.sum())))
    # No weight on padding keys or on later positions.
    assert (weights[0, 2:, :2] == 0).all()
    assert (weights.triu(diagonal=1) == 0).all()


def test_the_hierarchical_gate_is_in_the_open_unit_interval_and_both_encoders_reach_the_output() -> None:
    torch.manual_seed(0)
    encoder = HierarchicalEncoder(12, 8, 3, "attention", embedding_dropout=0.0, dropout=0.0)
    inputs = torch.tensor([[0, 0, 4, 9, 1, 6], [7, 3, 2, 10, 5, 1]])
    _, _, gate = encoder.parts(inputs)
    assert ((gate > 0) & (gate < 1)).all()
    (encoder.final(inputs) @ encoder.output_weights().t()).logsumexp(-1).sum().backward()
    short_term = [p.grad for p in encoder.short_term.parameters()]
    long_term = [p.grad for p in encoder.long_term_key.parameters()]
    assert all(grad is not None and grad.abs().sum() > 0 for grad in short_term + long_term)


@pytest.mark.parametrize("model_class", MODELS)
def test_a_session_scores_like_a_user_with_that_history(
    fitted: dict[type, SequentialRecommender], model_class: type
) -> None:
    model = fitted[model_class]
    assert model.items is not None and model.history is not None
    recommendations = model.recommend(sessions=[["m1", "m3"]], k=5)
    assert len(recommendations.items[0]) == 5
    session = model.items.index(["m1", "m3"])
    with torch.no_grad():
        from_session = model.score_sessions([session])
        saved = model.history[0].clone()
        model.history[0] = left_padded([session], model.config.max_length)[0]
        try:
            from_user = model.score(torch.tensor([0]))
        finally:
            model.history[0] = saved
    assert torch.allclose(from_session, from_user, atol=1e-5)


@pytest.mark.parametrize("model_class", MODELS)
def test_training_lowers_the_loss(fitted: dict[type, SequentialRecommender], model_class: type) -> None:
    report = fitted[model_class].training_report
    assert report is not None
    losses = [record["loss"] for record in report.history]
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < losses[0]


def test_narm_trains_on_the_last_position_only() -> None:
    model = AttentionalSequential(dim=16, train_positions="last").fit(toy_dataset(), trainer=epochs(6))
    report = model.training_report
    assert report is not None and report.history[-1]["loss"] < report.history[0]["loss"]


@pytest.mark.parametrize("loss", ["sampled_softmax", "gbce"])
def test_gru4rec_trains_with_sampled_losses(loss: str) -> None:
    model = GRU4Rec(dim=16, loss=loss, negatives=5).fit(toy_dataset(), trainer=epochs(6, 1e-2))
    report = model.training_report
    assert report is not None and report.history[-1]["loss"] < report.history[0]["loss"]
    assert torch.isfinite(model.score(torch.arange(model.n_users))).all()
