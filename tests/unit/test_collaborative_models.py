"""iALS, RP3β, LightGCN and Mult-VAE compute what their papers define, on tiny generated data."""

from __future__ import annotations

import numpy as np
import torch

from cinesync.testing import random_dataset, training_matrix
from cinesync.train.trainer import TrainerConfig
from cinesync_plugins.recommenders.ials import IALS
from cinesync_plugins.recommenders.lightgcn import LightGCN, normalized_adjacency
from cinesync_plugins.recommenders.multvae import MultVAE
from cinesync_plugins.recommenders.rp3beta import RP3Beta


def test_ials_item_factors_solve_the_weighted_normal_equations() -> None:
    dataset = random_dataset()
    model = IALS(factors=4, l2=0.5, alpha=3.0, iterations=3, block_size=7).fit(dataset)
    assert model.user_factors is not None and model.item_factors is not None
    x = training_matrix(dataset)
    users, items = model.user_factors.double().numpy(), model.item_factors.double().numpy()
    # The last half-sweep solved the items given the users: (Xᵀ C_i X + λI) y_i = Xᵀ C_i p_i for every item.
    for item in range(dataset.n_items):
        confidence = 1.0 + 3.0 * x[:, item]
        lhs = users.T @ (confidence[:, None] * users) + 0.5 * np.eye(4)
        rhs = users.T @ (confidence * x[:, item])
        np.testing.assert_allclose(lhs @ items[item], rhs, rtol=1e-4, atol=1e-5)


def test_ials_scores_are_the_factor_products() -> None:
    model = IALS(factors=3, iterations=2).fit(random_dataset())
    assert model.user_factors is not None and model.item_factors is not None
    users = torch.tensor([0, 4])
    expected = model.user_factors[users] @ model.item_factors.t()
    torch.testing.assert_close(model.score(users), expected)


def test_rp3beta_rows_are_the_penalised_random_walk_probabilities() -> None:
    dataset = random_dataset()
    model = RP3Beta(alpha=0.8, beta=0.4, neighbours=dataset.n_items).fit(dataset)
    x = training_matrix(dataset)
    user_degree, item_degree = x.sum(1), x.sum(0)
    item_to_user = (x / item_degree).T ** 0.8  # P(u | i)^α
    user_to_item = (x / user_degree[:, None]) ** 0.8  # P(j | u)^α
    expected = item_to_user @ user_to_item / item_degree**0.4
    np.fill_diagonal(expected, 0.0)
    assert model.item_matrix is not None
    np.testing.assert_allclose(model.item_matrix.to_dense().numpy(), expected, rtol=1e-5, atol=1e-7)


def test_rp3beta_without_exponent_or_penalty_rows_are_probabilities() -> None:
    dataset = random_dataset()
    model = RP3Beta(alpha=1.0, beta=0.0, neighbours=dataset.n_items).fit(dataset)
    x = training_matrix(dataset)
    walk = (x / x.sum(0)).T @ (x / x.sum(1, keepdims=True))
    # Every row of the full three-step walk sums to one; the model drops only the return to the same item.
    row_sums = model.item_matrix.to_dense().sum(1).numpy() + np.diag(walk)
    np.testing.assert_allclose(row_sums, 1.0, rtol=1e-5)


def test_rp3beta_keeps_only_the_largest_neighbours() -> None:
    model = RP3Beta(neighbours=3).fit(random_dataset())
    kept = (model.item_matrix.to_dense() != 0).sum(1)
    assert int(kept.max()) <= 3


def test_lightgcn_propagation_equals_the_dense_formula() -> None:
    dataset = random_dataset(n_users=6, n_items=5, density=0.4)
    model = LightGCN(dim=4, layers=2).fit(
        dataset, trainer=TrainerConfig(epochs=1, progress=False, early_stopping_metric=None)
    )
    x = training_matrix(dataset)
    n_users = dataset.n_users
    adjacency = np.zeros((n_users + dataset.n_items,) * 2)
    adjacency[:n_users, n_users:] = x
    adjacency[n_users:, :n_users] = x.T
    scale = 1.0 / np.sqrt(adjacency.sum(1))
    normalised = scale[:, None] * adjacency * scale[None, :]
    indptr, indices, _ = dataset.csr()
    sparse = normalized_adjacency(indptr, indices, n_users, dataset.n_items)
    np.testing.assert_allclose(sparse.to_dense().numpy(), normalised, rtol=1e-6)
    graph = model.graph
    ego = torch.cat([graph.users.weight, graph.items.weight]).detach().double().numpy()
    expected = (ego + normalised @ ego + normalised @ normalised @ ego) / 3
    users, items = graph.propagate(model.adjacency)
    np.testing.assert_allclose(users.detach().numpy(), expected[:n_users], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(items.detach().numpy(), expected[n_users:], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        model.score(torch.arange(n_users)),
        torch.from_numpy(expected[:n_users] @ expected[n_users:].T).float(),
    )


def test_lightgcn_propagation_gradient_equals_the_dense_formulas() -> None:
    dataset = random_dataset(n_users=6, n_items=5, density=0.4)
    indptr, indices, _ = dataset.csr()
    adjacency = normalized_adjacency(indptr, indices, dataset.n_users, dataset.n_items)
    model = LightGCN(dim=3, layers=2).build_module(dataset.n_users, dataset.n_items)
    users, items = model.propagate(adjacency)
    weights = torch.randn(users.shape[0] + items.shape[0], 3)
    (torch.cat([users, items]) * weights).sum().backward()
    dense = adjacency.to_dense()
    ego = torch.cat([model.users.weight, model.items.weight]).detach().requires_grad_()
    ((ego + dense @ ego + dense @ dense @ ego) / 3 * weights).sum().backward()
    assert ego.grad is not None
    torch.testing.assert_close(model.users.weight.grad, ego.grad[: dataset.n_users])
    torch.testing.assert_close(model.items.weight.grad, ego.grad[dataset.n_users :])


def test_lightgcn_scores_follow_the_weights_after_loading() -> None:
    dataset = random_dataset()
    model = LightGCN(dim=4).fit(dataset, trainer=TrainerConfig(epochs=2, progress=False))
    before = model.score(torch.arange(5))
    restored = LightGCN(model.config)
    restored.restore_base_state(dataset.users, dataset.items, model.base_state(), item_titles=None)
    restored.load_state_tensors(model.state_tensors())
    torch.testing.assert_close(restored.score(torch.arange(5)), before)


def test_multvae_kl_weight_anneals_to_its_cap_and_its_loss_decreases() -> None:
    dataset = random_dataset(n_users=60, n_items=30)
    model = MultVAE(hidden=16, latent=8, total_anneal_steps=10, anneal_cap=0.3)
    model.fit(
        dataset,
        trainer=TrainerConfig(
            epochs=15, batch_size=20, learning_rate=1e-2, progress=False, early_stopping_metric=None
        ),
    )
    assert model.training_report is not None
    losses = [record["loss"] for record in model.training_report.history]
    assert losses[-1] < losses[0]
    # 3 batches per epoch: 45 steps, past the 10 over which β reaches 1, so it sits at the cap.
    assert int(model.autoencoder.anneal_step) == 45
    assert model.kl_weight() == 0.3


def test_multvae_kl_weight_grows_linearly_before_the_cap() -> None:
    model = MultVAE(hidden=8, latent=4, total_anneal_steps=100, anneal_cap=0.5)
    model.fit(
        random_dataset(),
        trainer=TrainerConfig(epochs=1, batch_size=10, progress=False, early_stopping_metric=None),
    )
    assert int(model.autoencoder.anneal_step) == 3
    assert model.kl_weight() == 0.03


def test_multvae_scores_decode_the_encoder_mean_deterministically() -> None:
    model = MultVAE(hidden=8, latent=4).fit(
        random_dataset(), trainer=TrainerConfig(epochs=1, progress=False, early_stopping_metric=None)
    )
    model.autoencoder.train()  # dropout and sampling are training-only: scoring must not use them
    users = torch.arange(6)
    torch.testing.assert_close(model.score(users), model.score(users))
