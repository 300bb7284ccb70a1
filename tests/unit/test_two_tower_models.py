"""Properties of the two-tower models that their conformance checks would not catch."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from torch.nn import functional

from cinesync.data.dataset import Dataset
from cinesync.errors import CineSyncError, DataError
from cinesync.testing.conformance import random_dataset, toy_dataset
from cinesync.train.trainer import TrainerConfig
from cinesync_plugins.layers import in_batch_softmax_loss
from cinesync_plugins.recommenders._two_tower import NO_ITEM, TwoTowerRecommender, recent_histories
from cinesync_plugins.recommenders.collaborative_two_tower import CollaborativeTwoTower
from cinesync_plugins.recommenders.enhanced_two_tower import EnhancedTwoTower, HistoryAttention
from cinesync_plugins.recommenders.multitask_two_tower import MultitaskTwoTower
from cinesync_plugins.recommenders.two_tower import TwoTower

MODELS = [TwoTower, EnhancedTwoTower, MultitaskTwoTower, CollaborativeTwoTower]


def epochs(n: int) -> TrainerConfig:
    return TrainerConfig(epochs=n, batch_size=32, progress=False, early_stopping_metric=None)


@pytest.fixture(scope="module")
def fitted() -> dict[type, TwoTowerRecommender]:
    """Each model fitted for a few epochs on the toy dataset (shared: fitting is the slow part)."""
    return {model_class: model_class().fit(toy_dataset(), trainer=epochs(5)) for model_class in MODELS}


@pytest.mark.parametrize("model_class", MODELS)
def test_tower_outputs_are_unit_vectors(fitted: dict[type, TwoTowerRecommender], model_class: type) -> None:
    model = fitted[model_class]
    users = model.user_embeddings(torch.arange(model.n_users))
    items = model.item_embeddings()
    assert items.shape[0] == model.n_items
    assert torch.allclose(users.norm(dim=1), torch.ones(model.n_users), atol=1e-5)
    assert torch.allclose(items.norm(dim=1), torch.ones(model.n_items), atol=1e-5)


@pytest.mark.parametrize("model_class", MODELS)
def test_score_is_the_dot_product_of_the_towers_over_the_temperature(
    fitted: dict[type, TwoTowerRecommender], model_class: type
) -> None:
    model = fitted[model_class]
    users = torch.tensor([0, 5, 11])
    expected = model.user_embeddings(users) @ model.item_embeddings().t() / model.temperature
    assert torch.allclose(model.score(users), expected, atol=1e-5)
    items = torch.tensor([2, 7])
    assert torch.allclose(
        model.score(users, items),
        model.user_embeddings(users) @ model.item_embeddings(items).t() / model.temperature,
        atol=1e-5,
    )


@pytest.mark.parametrize("model_class", MODELS)
def test_training_lowers_the_loss(fitted: dict[type, TwoTowerRecommender], model_class: type) -> None:
    report = fitted[model_class].training_report
    assert report is not None
    losses = [record["loss"] for record in report.history]
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < losses[0]


def test_the_temperature_is_learned() -> None:
    trainer = TrainerConfig(
        epochs=5, batch_size=32, learning_rate=1e-2, progress=False, early_stopping_metric=None
    )
    learned = TwoTower().fit(toy_dataset(), trainer=trainer)
    assert abs(learned.temperature - learned.config.temperature) > 1e-3
    frozen = TwoTower(learn_temperature=False).fit(toy_dataset(), trainer=trainer)
    assert frozen.temperature == pytest.approx(frozen.config.temperature)


def test_the_log_q_correction_changes_the_loss_of_a_skewed_batch(
    fitted: dict[type, TwoTowerRecommender],
) -> None:
    corrected = fitted[TwoTower]
    assert corrected.item_probabilities is not None
    # Items of very different training frequency in one batch: the correction weighs them differently.
    order = torch.argsort(corrected.item_probabilities)
    items = torch.cat([order[:2], order[-2:]])
    batch = {"users": torch.tensor([0, 1, 2, 3]), "items": items}
    uncorrected = TwoTower(log_q_weight=0.0)
    uncorrected.module, uncorrected.item_probabilities = corrected.module, corrected.item_probabilities
    with torch.no_grad():
        with_correction, without = corrected.ranking_loss(batch)[0], uncorrected.ranking_loss(batch)[0]
        network = corrected.network
        users = network.user_embeddings(batch["users"], exclude=items)
        candidates = network.item_embeddings(items)
        log_q = torch.log(4 * corrected.item_probabilities[items])
        expected = in_batch_softmax_loss(users, candidates, network.temperature, log_q)
    assert float(with_correction) == pytest.approx(float(expected), rel=1e-5)
    assert float(with_correction) != pytest.approx(float(without), rel=1e-3)


def test_in_batch_softmax_masks_accidental_hits_and_appends_shared_negatives() -> None:
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    candidates = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # Both rows hold item 7: each is the other's positive, not its negative, so each row's loss is log 1 = 0.
    masked = in_batch_softmax_loss(query, candidates, 1.0, candidate_ids=torch.tensor([7, 7]))
    assert float(masked) == pytest.approx(0.0)
    extra = torch.tensor([[0.0, 1.0]])
    mixed = in_batch_softmax_loss(query, candidates, 1.0, extra_negatives=extra)
    logits = query @ torch.cat([candidates, extra]).t()
    assert float(mixed) == pytest.approx(float(functional.cross_entropy(logits, torch.tensor([0, 1]))))


def test_mixed_negatives_train_two_tower() -> None:
    model = TwoTower(uniform_negatives=2).fit(toy_dataset(), trainer=epochs(3))
    report = model.training_report
    assert report is not None and report.history[-1]["loss"] < report.history[0]["loss"]
    assert torch.isfinite(model.score(torch.arange(model.n_users))).all()


def test_two_tower_trains_without_catalogue_features() -> None:
    model = TwoTower().fit(random_dataset(), trainer=epochs(2))
    assert model.network.n_features == 0
    assert torch.isfinite(model.score(torch.arange(model.n_users))).all()


def test_the_genre_models_say_they_need_genres() -> None:
    with pytest.raises(DataError, match="genres"):
        CollaborativeTwoTower().fit(random_dataset(), trainer=epochs(1))


def test_histories_hold_the_most_recent_items_oldest_first() -> None:
    data = toy_dataset()
    history = recent_histories(data, 3)
    for user, sequence in enumerate(data.sequences()):
        recent = sequence[-3:].tolist()
        assert history[user, : len(recent)].tolist() == recent
    long = recent_histories(data, 20)
    lengths = (long != NO_ITEM).sum(1)
    assert lengths.tolist() == [len(sequence) for sequence in data.sequences()]


def test_the_predicted_item_is_left_out_of_the_users_history(fitted: dict[type, TwoTowerRecommender]) -> None:
    network = fitted[TwoTower].network
    users = torch.tensor([0, 1])
    items, mask = network.history(users)
    target = items[:, 0]
    _, without = network.history(users, exclude=target)
    assert mask[:, 0].all() and not without[:, 0].any()
    assert torch.equal(without[:, 1:], mask[:, 1:] & (items[:, 1:] != target.unsqueeze(1)))


def test_history_attention_of_a_user_without_history_is_finite() -> None:
    torch.manual_seed(0)
    attention = HistoryAttention(dim=4, heads=2)
    query, tokens = torch.randn(2, 4), torch.randn(5, 4)
    items = torch.tensor([[1, 3, 0], [0, 0, 0]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    out = attention(query, tokens, items, mask)
    assert torch.isfinite(out).all()
    # Padding is ignored: changing the token a masked position points at leaves the output alone.
    changed = tokens.clone()
    changed[0] += 10.0
    assert torch.allclose(attention(query, changed, items, mask), out)
    assert not torch.allclose(attention(query, changed, items.fill_(0), mask), out)


def test_multitask_heads_and_losses(fitted: dict[type, TwoTowerRecommender]) -> None:
    model = fitted[MultitaskTwoTower]
    assert isinstance(model, MultitaskTwoTower)
    assert model.task_heads() == {"ranking": "softmax", "rating": "mse", "genre": "bce"}
    examples = model.training_examples(toy_dataset())
    batch = model.collate({name: tensor[:16] for name, tensor in examples.items()}, torch.Generator())
    towers = model.towers.train()
    losses = model.loss(batch)
    assert set(losses) == {"ranking", "rating", "genre"}
    shared = {"user tower": towers.user_mlp[0].weight, "item tower": towers.item_mlp[0].weight}
    reaches = {
        "ranking": {"user tower", "item tower"},
        "rating": {"user tower", "item tower"},
        "genre": {"item tower"},
    }
    for head, loss in losses.items():
        assert torch.isfinite(loss)
        towers.zero_grad()
        loss.backward(retain_graph=True)
        for tower in reaches[head]:
            gradient = shared[tower].grad
            assert gradient is not None and gradient.abs().sum() > 0, f"{head} does not reach the {tower}"


def test_multitask_rating_head_predicts_on_the_rating_scale() -> None:
    model = MultitaskTwoTower().fit(toy_dataset(), trainer=epochs(15))
    data = toy_dataset()
    rmse = model.task_metric("rating", "rmse", data)
    spread = float(data.interactions["rating"].std())
    assert rmse is not None and rmse < 1.5 * spread


def held_out(data: Dataset, item: int) -> Dataset:
    """``data`` without ``item``'s interactions (the item stays in the catalogue, never seen in training)."""
    frame: pd.DataFrame = data.interactions
    return data.with_interactions(frame[frame["item"] != item])


def test_a_cold_item_is_scored_from_its_features() -> None:
    data = toy_dataset()
    # Even users like the even items (Comedy|Romance), odd users the odd ones (Drama); item 5 is Drama.
    cold = int(data.items.index(["m5"])[0])
    model = CollaborativeTwoTower().fit(held_out(data, cold), trainer=epochs(30))
    users = torch.arange(model.n_users)
    assert model.network.item_features[cold].tolist() == model.item_features_for([["Drama"]])[0].tolist()
    drama = model.score_new_items(users, model.item_features_for([["Drama"]]))[:, 0]
    comedy = model.score_new_items(users, model.item_features_for([["Comedy", "Romance"]]))[:, 0]
    assert torch.isfinite(drama).all() and drama.std() > 0
    assert not torch.allclose(drama, comedy)
    # Learned from the features, not from the id: the Drama item scores higher for the Drama-watching users.
    odd = users % 2 == 1
    assert drama[odd].mean() > drama[~odd].mean()
    assert comedy[~odd].mean() > comedy[odd].mean()


def test_new_items_scores_are_on_the_scale_of_known_items(fitted: dict[type, TwoTowerRecommender]) -> None:
    model = fitted[CollaborativeTwoTower]
    assert isinstance(model, CollaborativeTwoTower)
    features = model.network.item_features[:3]
    scores = model.score_new_items(torch.arange(4), features)
    assert scores.shape == (4, 3)
    assert scores.abs().max() <= 1 / model.temperature + 1e-4
    with pytest.raises(CineSyncError, match="Western"):
        model.item_features_for([["Western"]])
    with pytest.raises(CineSyncError, match="shape"):
        model.score_new_items(torch.arange(2), torch.zeros(1, 99))
