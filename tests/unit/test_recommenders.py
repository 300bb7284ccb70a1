"""The first-party recommenders: Popularity, ItemKNN, EASE and BPR-MF on tiny generated data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from cinesync.data.dataset import Dataset, build_dataset
from cinesync.interfaces import Recommender
from cinesync.testing import random_dataset, training_matrix
from cinesync.train.trainer import TrainerConfig
from cinesync_plugins.recommenders.bpr_mf import BPRMF
from cinesync_plugins.recommenders.ease import EASE
from cinesync_plugins.recommenders.itemknn import ItemKNN
from cinesync_plugins.recommenders.popularity import Popularity

FAST_TRAINING = TrainerConfig(epochs=3, progress=False, device="cpu")


def planted_dataset(n_users: int = 60, n_items: int = 40, per_user: int = 10, seed: int = 0) -> Dataset:
    """Two taste groups: even users pick only from the first half of the items, odd users from the second."""
    rng = np.random.default_rng(seed)
    half = n_items // 2
    rows = []
    for user in range(n_users):
        offset = 0 if user % 2 == 0 else half
        for order, item in enumerate(rng.choice(half, size=per_user, replace=False) + offset):
            rows.append((user, int(item), order))
    return build_dataset("planted", pd.DataFrame(rows, columns=["user", "item", "timestamp"]))


def all_users(model: Recommender) -> torch.Tensor:
    return torch.arange(model.n_users)


def test_popularity_ranks_items_by_training_count() -> None:
    frame = pd.DataFrame({"user": [0, 1, 2, 0, 1, 0], "item": [10, 10, 10, 20, 20, 30]})
    model = Popularity().fit(build_dataset("counts", frame))

    scores = model.score(torch.tensor([0, 2]))

    assert scores.tolist() == [[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]]
    assert model.recommend([2], k=3).items == [[20, 30]]


@pytest.mark.parametrize(("n_users", "n_items"), [(30, 12), (12, 30)], ids=["more-users", "more-items"])
def test_ease_weights_equal_the_closed_form(n_users: int, n_items: int) -> None:
    dataset = random_dataset(n_users, n_items, density=0.3)
    l2 = 5.0
    model = EASE(l2=l2).fit(dataset)

    matrix = training_matrix(dataset)
    precision = np.linalg.inv(matrix.T @ matrix + l2 * np.eye(n_items))
    expected = np.eye(n_items) - precision / np.diag(precision)
    np.fill_diagonal(expected, 0.0)
    assert model.weights is not None
    np.testing.assert_allclose(model.weights.numpy(), expected, atol=1e-5)


def test_ease_scores_are_the_training_rows_times_the_weights() -> None:
    dataset = random_dataset(15, 10, density=0.3)
    model = EASE(l2=1.0).fit(dataset)
    assert model.weights is not None

    expected = torch.from_numpy(training_matrix(dataset)).float() @ model.weights
    torch.testing.assert_close(model.score(all_users(model)), expected)


def cosine_with_shrinkage(matrix: np.ndarray, shrinkage: float) -> np.ndarray:
    norms = np.sqrt(matrix.sum(0))
    similarity = (matrix.T @ matrix) / (np.outer(norms, norms) + shrinkage)
    np.fill_diagonal(similarity, 0.0)
    return similarity


def neighbour_matrix(model: ItemKNN) -> np.ndarray:
    """The kept similarities as a dense items x items matrix (row: item, columns: its neighbours)."""
    assert model.neighbour_items is not None and model.neighbour_weights is not None
    dense = np.zeros((model.n_items, model.n_items))
    rows = np.repeat(np.arange(model.n_items), model.neighbour_items.shape[1])
    dense[rows, model.neighbour_items.flatten().numpy()] = model.neighbour_weights.flatten().numpy()
    return dense


def test_itemknn_without_pruning_keeps_the_symmetric_cosine_similarity() -> None:
    dataset = random_dataset(25, 12, density=0.3)
    model = ItemKNN(neighbours=11, shrinkage=2.0, block_size=5).fit(dataset)

    kept = neighbour_matrix(model)

    np.testing.assert_allclose(kept, kept.T, atol=1e-6)
    np.testing.assert_allclose(kept, cosine_with_shrinkage(training_matrix(dataset), 2.0), atol=1e-6)


def test_itemknn_keeps_each_items_most_similar_neighbours_only() -> None:
    dataset = random_dataset(25, 12, density=0.3)
    model = ItemKNN(neighbours=3, shrinkage=0.0, block_size=5).fit(dataset)

    kept = neighbour_matrix(model)
    full = cosine_with_shrinkage(training_matrix(dataset), 0.0)

    assert ((kept > 0).sum(1) <= 3).all()
    np.testing.assert_allclose(np.sort(kept, 1)[:, -3:], np.sort(full, 1)[:, -3:], atol=1e-6)


def test_itemknn_scores_sum_the_kept_similarities_of_the_history() -> None:
    dataset = random_dataset(20, 10, density=0.3)
    model = ItemKNN(neighbours=4).fit(dataset)

    expected = training_matrix(dataset) @ neighbour_matrix(model)

    np.testing.assert_allclose(model.score(all_users(model)).numpy(), expected, atol=1e-5)


def test_bpr_loss_decreases_and_it_recovers_planted_tastes() -> None:
    dataset = planted_dataset()
    trainer = TrainerConfig(
        epochs=40, learning_rate=0.05, optimizer="adagrad", batch_size=1024, progress=False
    )
    model = BPRMF(dim=8, l2=1e-3).fit(dataset, trainer=trainer)
    assert model.training_report is not None
    losses = [epoch["loss"] for epoch in model.training_report.history]

    scores = model.score(all_users(model)).masked_fill(model.seen_mask(all_users(model)), float("-inf"))
    top = scores.topk(5, dim=1).indices
    same_group = (top < dataset.n_items // 2) == (all_users(model) % 2 == 0)[:, None]

    assert losses[-1] < 0.5 * losses[0]
    # Random ranking would put half of the unseen items of the user's own group (a third) in the top 5.
    assert same_group.float().mean() > 0.9


def test_bpr_l2_penalises_only_the_embeddings_a_batch_uses() -> None:
    model = BPRMF(dim=4, l2=1.0).fit(planted_dataset(), trainer=FAST_TRAINING)
    batch = {"users": torch.tensor([0]), "positives": torch.tensor([1]), "negatives": torch.tensor([[2]])}
    unregularised = BPRMF(dim=4, l2=0.0)
    unregularised.module = model.trained_module
    users, items = model.factorization.users.weight, model.factorization.items.weight

    with torch.no_grad():
        penalty = float(model.loss(batch) - unregularised.loss(batch))
        expected = sum(float(vector.pow(2).sum()) for vector in (users[0], items[1], items[2]))

    assert penalty == pytest.approx(expected, rel=1e-5)


def fitted(component: type[Recommender]) -> Recommender:
    dataset = random_dataset(20, 15, density=0.3)
    if component is BPRMF:
        return BPRMF(dim=4).fit(dataset, trainer=FAST_TRAINING)
    return component().fit(dataset)


@pytest.mark.parametrize("component", [Popularity, ItemKNN, EASE, BPRMF])
def test_loading_the_state_tensors_into_a_fresh_instance_gives_identical_scores(
    component: type[Recommender],
) -> None:
    model = fitted(component)
    assert model.users is not None and model.items is not None
    fresh = component(model.config)

    fresh.restore_base_state(model.users, model.items, model.base_state(), model.item_titles)
    fresh.load_state_tensors({name: tensor.clone() for name, tensor in model.state_tensors().items()})

    torch.testing.assert_close(fresh.score(all_users(model)), model.score(all_users(model)), rtol=0, atol=0)


@pytest.mark.parametrize("component", [Popularity, ItemKNN, EASE, BPRMF])
def test_scores_of_chosen_items_are_the_matching_columns(component: type[Recommender]) -> None:
    model = fitted(component)
    items = torch.tensor([3, 0, 7])

    torch.testing.assert_close(model.score(all_users(model), items), model.score(all_users(model))[:, items])


@pytest.mark.parametrize("component", [ItemKNN, EASE, BPRMF])
def test_config_rejects_unknown_fields(component: type[Recommender]) -> None:
    with pytest.raises(ValidationError):
        component(not_a_field=1)
