"""Properties of the transformer sequential models (transformer_sequential, enhanced_sasrec, bert4rec) that the
conformance kit would not catch."""

from __future__ import annotations

import math

import pytest
import torch

from cinesync.serve.artifacts import load_artifact, save_artifact
from cinesync.testing import toy_dataset
from cinesync.train.trainer import TrainerConfig
from cinesync_plugins.recommenders._sequential import PAD, SequentialRecommender
from cinesync_plugins.recommenders._transformer import RotaryEmbedding, rotate
from cinesync_plugins.recommenders.bert4rec import BERT4Rec
from cinesync_plugins.recommenders.enhanced_sasrec import (
    UNKNOWN_INTERVAL,
    UNKNOWN_TIME,
    EnhancedSASRec,
    interval_buckets,
    time_sequences,
)
from cinesync_plugins.recommenders.transformer_sequential import TransformerSequential

MODELS = [TransformerSequential, EnhancedSASRec, BERT4Rec]
SMALL = {"max_length": 8, "dim": 16}


def epochs(n: int) -> TrainerConfig:
    return TrainerConfig(epochs=n, batch_size=16, progress=False, early_stopping_metric=None)


@pytest.fixture(scope="module")
def fitted() -> dict[type, SequentialRecommender]:
    """Each model fitted for a few epochs on the toy dataset (shared: fitting is the slow part)."""
    return {model_class: model_class(**SMALL).fit(toy_dataset(), trainer=epochs(3)) for model_class in MODELS}


def sequences(*rows: list[int]) -> torch.Tensor:
    """Left-padded shifted item ids (item index + 1) of length SMALL["max_length"]."""
    length = SMALL["max_length"]
    return torch.tensor([[PAD] * (length - len(row)) + row for row in rows])


# -- causality and direction --------------------------------------------------------------------------------
@pytest.mark.parametrize("model_class", [TransformerSequential, EnhancedSASRec])
def test_a_causal_state_ignores_later_items(
    fitted: dict[type, SequentialRecommender], model_class: type
) -> None:
    encoder = fitted[model_class].trained_module.eval()
    before = sequences([3, 5, 7, 9, 11])
    after = sequences([3, 5, 7, 2, 4])
    with torch.no_grad():
        states_before, states_after = encoder.states(before), encoder.states(after)
    prefix = SMALL["max_length"] - 2  # positions up to the item "7"
    assert torch.allclose(states_before[:, :prefix], states_after[:, :prefix], atol=1e-5)
    assert not torch.allclose(states_before[:, -1], states_after[:, -1], atol=1e-4)


def test_enhanced_sasrec_states_ignore_later_times(fitted: dict[type, SequentialRecommender]) -> None:
    model = fitted[EnhancedSASRec]
    encoder = model.trained_module.eval()
    with torch.no_grad():
        encoder.interval_bias.weight.normal_()
    inputs = sequences([3, 5, 7, 9])
    times = torch.tensor([[UNKNOWN_TIME] * 4 + [0, 60, 3_600, 86_400]])
    later = times.clone()
    later[0, -1] = 10 * 86_400
    with torch.no_grad():
        first, second = encoder.states(inputs, times), encoder.states(inputs, later)
    assert torch.allclose(first[:, :-1], second[:, :-1], atol=1e-5)
    assert not torch.allclose(first[:, -1], second[:, -1], atol=1e-4)


def test_bert4rec_attends_to_later_items(fitted: dict[type, SequentialRecommender]) -> None:
    model = fitted[BERT4Rec]
    assert isinstance(model, BERT4Rec)
    encoder = model.trained_module.eval()
    mask = model.mask_token
    with torch.no_grad():
        first = encoder.states(sequences([3, mask, 7, 9]))
        second = encoder.states(sequences([3, mask, 7, 2]))
    masked_position = SMALL["max_length"] - 3
    assert not torch.allclose(first[0, masked_position], second[0, masked_position], atol=1e-4)


# -- rotary position embeddings -------------------------------------------------------------------------------
def test_rotary_embedding_preserves_norms() -> None:
    rotary = RotaryEmbedding(8)
    x = torch.randn(2, 3, 10, 8)
    rotated = rotate(x, *rotary.angles(10))
    assert torch.allclose(rotated.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    assert not torch.allclose(rotated[..., 1:, :], x[..., 1:, :])


def test_rotary_scores_depend_on_relative_position_only() -> None:
    rotary = RotaryEmbedding(8)
    query, key = torch.randn(8), torch.randn(8)
    length = 12
    cos, sin = rotary.angles(length)
    queries = rotate(query.expand(length, 8), cos, sin)
    keys = rotate(key.expand(length, 8), cos, sin)
    scores = queries @ keys.t()  # scores[m, n]: query at position m, key at position n
    for offset in (-3, 0, 2, 5):
        diagonal = torch.diagonal(scores, offset)
        assert torch.allclose(diagonal, diagonal[0].expand_as(diagonal), atol=1e-4)
    assert not torch.isclose(scores[0, 0], scores[0, 1])


def test_learned_positions_are_an_option() -> None:
    model = TransformerSequential(positions="learned", **SMALL).fit(toy_dataset(), trainer=epochs(1))
    assert model.trained_module.position_embedding is not None
    assert model.trained_module.rotary is None
    with pytest.raises(ValueError, match="even head size"):
        TransformerSequential(dim=6, heads=2)


# -- enhanced_sasrec: time intervals and genres --------------------------------------------------------------
def test_interval_buckets_are_log_scale_with_an_unknown_bucket() -> None:
    times = torch.tensor([[UNKNOWN_TIME, 0, 30, 3_600, 86_400, 10**9]])
    buckets = interval_buckets(times, 24)
    assert (buckets[0, 0] == UNKNOWN_INTERVAL).all() and (buckets[0, :, 0] == UNKNOWN_INTERVAL).all()
    assert buckets[0, 1, 1] == 1  # the same second
    assert buckets[0, 2, 1] == 1  # 30 s: under a minute
    assert buckets[0, 3, 1] == 1 + math.floor(math.log2(61))  # an hour
    assert buckets[0, 4, 1] == 1 + math.floor(math.log2(1 + 1440))  # a day
    assert buckets[0, 5, 1] == 23  # clipped at the last bucket
    assert torch.equal(buckets, buckets.transpose(1, 2))


def test_history_times_follow_the_order_of_sequences() -> None:
    data = toy_dataset()
    model = EnhancedSASRec(**SMALL).fit(data, trainer=epochs(1))
    frame = data.interactions
    for user, (items, times) in enumerate(zip(data.sequences(), time_sequences(data), strict=True)):
        rows = frame[frame["user"] == user]
        assert sorted(zip(rows["timestamp"], rows["item"], strict=True)) == list(
            zip(times, items, strict=True)
        )
        kept = min(len(items), SMALL["max_length"])
        assert model.history_times[user, -kept:].tolist() == times[-kept:].tolist()
        assert (model.history_times[user, :-kept] == UNKNOWN_TIME).all()


def test_time_intervals_change_enhanced_sasrec_scores(fitted: dict[type, SequentialRecommender]) -> None:
    model = fitted[EnhancedSASRec]
    assert isinstance(model, EnhancedSASRec)
    with torch.no_grad():
        model.trained_module.interval_bias.weight.normal_()
        inputs, times = model.history[:4], model.history_times[:4]
        with_times = model.score_sequences(inputs, times)
        stretched = model.score_sequences(inputs, torch.where(times >= 0, times * 1000, UNKNOWN_TIME))
        without_times = model.score_sequences(inputs)
        # The toy users' items are seconds apart (one bucket): a bias shared by every key changes no attention.
        uniform_intervals = model.score_sequences(inputs, torch.where(times >= 0, 0, UNKNOWN_TIME))
    assert not torch.allclose(with_times, stretched, atol=1e-4)
    assert not torch.allclose(stretched, without_times, atol=1e-4)
    assert torch.allclose(uniform_intervals, without_times, atol=1e-5)
    assert torch.allclose(model.score(torch.arange(4)), with_times, atol=1e-6)


def test_genres_reach_the_item_representation(fitted: dict[type, SequentialRecommender]) -> None:
    encoder = fitted[EnhancedSASRec].trained_module.eval()
    genre_ids = encoder.get_buffer("item_genre_ids")
    with torch.no_grad():
        before_output = encoder.output_weights().clone()
        before_states = encoder.states(sequences([1, 2, 3]))
        genre_ids[1] = genre_ids[0]  # item 1 (shifted id 2) now has item 0's genres
        after_output = encoder.output_weights()
        after_states = encoder.states(sequences([1, 2, 3]))
    changed = (before_output - after_output).abs().sum(1) > 1e-6
    assert changed.tolist() == [index == 1 for index in range(len(changed))]
    assert not torch.allclose(before_states[0, -2], after_states[0, -2], atol=1e-5)


def test_enhanced_sasrec_extras_can_be_switched_off() -> None:
    model = EnhancedSASRec(genres=False, time_intervals=False, **SMALL).fit(toy_dataset(), trainer=epochs(1))
    encoder = model.trained_module
    assert encoder.genre_embedding is None and encoder.interval_bias is None
    assert "item_genre_ids" not in model.state_tensors()


# -- bert4rec: the cloze objective and scoring ----------------------------------------------------------------
def test_bert4rec_masks_real_items_at_the_requested_rate() -> None:
    model = BERT4Rec(max_length=50, mask_probability=0.3).fit(toy_dataset(), trainer=epochs(1))
    lengths = torch.randint(2, 51, (400,), generator=torch.Generator().manual_seed(1))
    windows = torch.stack(
        [torch.cat([torch.zeros(50 - n, dtype=torch.long), torch.randint(1, 31, (int(n),))]) for n in lengths]
    )
    batch = model.collate({"sequences": windows}, torch.Generator().manual_seed(0))
    again = model.collate({"sequences": windows}, torch.Generator().manual_seed(0))
    assert torch.equal(batch["inputs"], again["inputs"])
    masked = batch["inputs"] == model.mask_token
    real = windows != PAD
    assert not (masked & ~real).any()
    assert masked[:, -1].all()
    assert torch.equal(batch["targets"] != PAD, masked)
    assert torch.equal(batch["targets"][masked], windows[masked])
    assert torch.equal(batch["inputs"][~masked], windows[~masked])
    rate = masked[:, :-1].sum() / real[:, :-1].sum()
    assert abs(float(rate) - 0.3) < 0.02


def test_bert4rec_masks_only_the_last_item_in_the_requested_share_of_windows() -> None:
    model = BERT4Rec(max_length=50, mask_probability=0.5, last_only_fraction=0.3)
    model.fit(toy_dataset(), trainer=epochs(1))
    windows = torch.randint(1, 31, (1000, 50), generator=torch.Generator().manual_seed(1))
    masked = (
        model.collate({"sequences": windows}, torch.Generator().manual_seed(0))["inputs"] == model.mask_token
    )
    assert masked[:, -1].all()
    last_only = ~masked[:, :-1].any(1)
    assert abs(float(last_only.float().mean()) - 0.3) < 0.05


def test_bert4rec_scores_at_a_mask_appended_to_the_history(fitted: dict[type, SequentialRecommender]) -> None:
    model = fitted[BERT4Rec]
    assert isinstance(model, BERT4Rec)
    encoder = model.trained_module.eval()
    full = torch.arange(1, SMALL["max_length"] + 1).unsqueeze(0)
    with torch.no_grad():
        scores = model.score_sequences(full)
        query = torch.cat([full[:, 1:], torch.tensor([[model.mask_token]])], dim=1)
        expected = encoder.states(query)[:, -1] @ encoder.output_weights().t()
    assert torch.allclose(scores, expected, atol=1e-5)
    assert encoder.output_weights().shape[0] == model.n_items


# -- every model ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_class", MODELS)
def test_recommends_for_an_anonymous_session(
    fitted: dict[type, SequentialRecommender], model_class: type
) -> None:
    result = fitted[model_class].recommend(sessions=[["m1", "m3"]], k=5)
    assert result.users == ["session-0"]
    assert len(result.items[0]) == 5
    assert not {"m1", "m3"} & set(result.items[0])


@pytest.mark.parametrize("model_class", MODELS)
def test_artifact_round_trip_keeps_scores(
    fitted: dict[type, SequentialRecommender], model_class: type, tmp_path: object
) -> None:
    model = fitted[model_class]
    save_artifact(model, f"{tmp_path}/model", name="test")
    loaded = load_artifact(f"{tmp_path}/model")
    users = torch.arange(model.n_users)
    with torch.no_grad():
        assert torch.equal(loaded.score(users), model.score(users))
        sessions = [model.items.index(["m1", "m3"])]
        assert torch.equal(loaded.score_sessions(sessions), model.score_sessions(sessions))


@pytest.mark.parametrize("model_class", MODELS)
def test_training_loss_falls(model_class: type) -> None:
    trainer = epochs(20).model_copy(update={"learning_rate": 0.01})
    model = model_class(**SMALL).fit(toy_dataset(), trainer=trainer)
    losses = [epoch["loss"] for epoch in model.training_report.history]
    assert sum(losses[-3:]) < 0.8 * sum(losses[:3])
