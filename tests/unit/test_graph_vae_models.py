"""GraphSAGE and RecVAE compute what their papers define, on tiny generated data."""

from __future__ import annotations

import tempfile

import numpy as np
import torch

from cinesync.serve.artifacts import load_artifact, save_artifact
from cinesync.testing import random_dataset, toy_dataset, training_matrix
from cinesync.train.trainer import TrainerConfig, seed_everything
from cinesync_plugins.recommenders.graphsage import (
    GraphSAGE,
    bipartite_neighbours,
    sample_neighbours,
    sampled_mean_adjacency,
)
from cinesync_plugins.recommenders.recvae import RecVAE


def one_epoch(**settings: object) -> TrainerConfig:
    return TrainerConfig.model_validate(
        {"epochs": 1, "progress": False, "early_stopping_metric": None, **settings}
    )


def test_graphsage_inference_equals_the_dense_mean_aggregator() -> None:
    dataset = random_dataset(n_users=6, n_items=5, density=0.4)
    model = GraphSAGE(dim=4, fanouts=[2, 2], temperature=0.5).fit(dataset, trainer=one_epoch())
    x = training_matrix(dataset)
    n_users = dataset.n_users
    adjacency = np.zeros((n_users + dataset.n_items,) * 2)
    adjacency[:n_users, n_users:] = x
    adjacency[n_users:, :n_users] = x.T
    mean = adjacency / np.maximum(adjacency.sum(1, keepdims=True), 1)
    graph = model.graph
    state = torch.cat([graph.users.weight, graph.items.weight]).detach().double().numpy()
    for layer, aggregator in enumerate(graph.aggregators):
        weight, bias = aggregator.weight.detach().double().numpy(), aggregator.bias.detach().double().numpy()
        state = np.concatenate([state, mean @ state], axis=1) @ weight.T + bias
        if layer == 0:
            state = np.maximum(state, 0.0)  # ReLU between layers, none after the last
        state = state / np.linalg.norm(state, axis=1, keepdims=True)
    np.testing.assert_allclose(model.representations().numpy(), state, rtol=1e-5, atol=1e-6)
    expected = state[:n_users] @ state[n_users:].T / 0.5
    np.testing.assert_allclose(model.score(torch.arange(n_users)).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_graphsage_samples_at_most_fanout_distinct_true_neighbours() -> None:
    dataset = random_dataset(n_users=30, n_items=20, density=0.3)
    indptr, indices = bipartite_neighbours(*dataset.csr()[:2], dataset.n_users, dataset.n_items)
    n_nodes = dataset.n_users + dataset.n_items
    nodes = torch.arange(n_nodes).repeat(20)
    sample = sample_neighbours(indptr, indices, nodes, 4, torch.Generator().manual_seed(0))
    assert sample.shape == (len(nodes), 4)
    for node, row in zip(nodes.tolist(), sample.tolist(), strict=True):
        true = set(indices[indptr[node] : indptr[node + 1]].tolist())
        drawn = [neighbour for neighbour in row if neighbour != n_nodes]  # n_nodes: the padding node
        assert len(set(drawn)) == len(drawn) == min(4, len(true))
        assert set(drawn) <= true


def test_graphsage_samples_neighbours_uniformly() -> None:
    dataset = random_dataset(n_users=30, n_items=20, density=0.5)
    indptr, indices = bipartite_neighbours(*dataset.csr()[:2], dataset.n_users, dataset.n_items)
    node = int(torch.argmax(indptr.diff()[:-1]))
    degree = int(indptr[node + 1] - indptr[node])
    draws = sample_neighbours(indptr, indices, torch.full((4000,), node), 3, torch.Generator().manual_seed(1))
    counts = torch.bincount(draws.reshape(-1), minlength=len(indptr))[
        indices[indptr[node] : indptr[node + 1]]
    ]
    # Each neighbour is in a uniform 3-subset with probability 3/degree: 4000·3/degree draws, give or take.
    expected = 4000 * 3 / degree
    assert degree > 6 and float((counts - expected).abs().max()) < 5 * expected**0.5


def test_graphsage_sampled_means_are_the_full_means_when_fanouts_cover_every_neighbour() -> None:
    dataset = random_dataset(n_users=8, n_items=6, density=0.5)
    model = GraphSAGE(dim=3, fanouts=[50, 50]).fit(dataset, trainer=one_epoch())
    full = model.adjacency.to_dense()
    for sample in model.neighbour_samples(torch.Generator().manual_seed(7)):
        mean, transpose = sampled_mean_adjacency(sample)
        torch.testing.assert_close(mean.to_dense(), full)
        torch.testing.assert_close(transpose.to_dense(), full.t())


def test_graphsage_sampled_means_average_the_samples_and_their_gradient_is_exact() -> None:
    dataset = random_dataset(n_users=8, n_items=6, density=0.5)
    model = GraphSAGE(dim=3, fanouts=[2]).fit(dataset, trainer=one_epoch())
    (sample,) = model.neighbour_samples(torch.Generator().manual_seed(3))
    mean, transpose = sampled_mean_adjacency(sample)
    states = torch.randn(len(sample) + 1, 3)
    states[-1] = 0.0  # the padding node's row
    drawn = (sample < len(sample)).sum(1, keepdim=True).clamp(min=1)
    torch.testing.assert_close(mean @ states[:-1], states[sample].sum(1) / drawn)
    torch.testing.assert_close(transpose.to_dense(), mean.to_dense().t())
    graph = model.graph
    weights = torch.randn(len(sample), 3)
    (graph.propagate([mean], [transpose]) * weights).sum().backward()
    sparse_gradient = graph.users.weight.grad.clone()
    graph.zero_grad()
    (graph.propagate([mean.to_dense()]) * weights).sum().backward()
    torch.testing.assert_close(sparse_gradient, graph.users.weight.grad)


def test_graphsage_artifact_round_trip_gives_identical_scores() -> None:
    dataset = toy_dataset()
    model = GraphSAGE(dim=8, genres=True).fit(dataset, trainer=one_epoch(epochs=2, batch_size=32))
    with tempfile.TemporaryDirectory() as directory:
        save_artifact(model, f"{directory}/graphsage", name="test")
        loaded = load_artifact(f"{directory}/graphsage")
    users = torch.arange(dataset.n_users)
    assert isinstance(loaded, GraphSAGE) and loaded.item_genres is not None
    torch.testing.assert_close(loaded.score(users), model.score(users), rtol=0, atol=0)


def test_graphsage_training_reduces_the_loss() -> None:
    model = GraphSAGE(dim=8, negatives=8).fit(
        toy_dataset(), trainer=one_epoch(epochs=10, batch_size=32, learning_rate=1e-2)
    )
    assert model.training_report is not None
    losses = [record["loss"] for record in model.training_report.history]
    assert losses[-1] < 0.8 * losses[0]


def small_recvae(**params: object) -> RecVAE:
    return RecVAE(**{"hidden": 16, "latent": 4, "depth": 3, **params})


def test_recvae_prior_mixes_the_previous_encoders_posterior() -> None:
    module = small_recvae(prior_weights=[0.2, 0.7, 0.1]).build_module(n_users=5, n_items=12)
    rows = (torch.rand(5, 12, generator=torch.Generator().manual_seed(0)) < 0.4).float()
    z = torch.randn(5, 4)
    before = module.prior_log_density(rows, z)
    with torch.no_grad():
        for parameter in module.encoder.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    # Training the encoder leaves the prior alone until the previous encoder is replaced by it.
    torch.testing.assert_close(module.prior_log_density(rows, z), before)
    module.update_prior()
    after = module.prior_log_density(rows, z)
    assert not torch.allclose(after, before)
    mean, log_variance = module.encode(rows, drop=False)

    def normal(mu: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        return torch.exp(-((z - mu) ** 2) / (2 * var)) / torch.sqrt(2 * torch.pi * var)

    one = torch.ones_like(z)
    mixture = (
        0.2 * normal(0 * z, one)
        + 0.7 * normal(mean, log_variance.exp())
        + 0.1 * normal(0 * z, one * np.e**10)
    )
    torch.testing.assert_close(after, mixture.log())


def test_recvae_kl_weight_is_gamma_times_the_users_interactions() -> None:
    model = small_recvae(gamma=0.01)
    rows = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(model.kl_weights(rows), torch.tensor([0.03, 0.01, 0.0]))


def test_recvae_phases_update_only_their_part() -> None:
    dataset = random_dataset()
    model = small_recvae().fit(dataset, trainer=one_epoch())
    batch = model.collate({"users": torch.arange(8)}, torch.Generator())
    module = model.autoencoder.train()
    for phase, trained, frozen in (
        ("encoder", module.encoder, module.decoder),
        ("decoder", module.decoder, module.encoder),
    ):
        module.zero_grad(set_to_none=True)
        model.phase = phase
        model.loss(batch).backward()
        assert all(parameter.grad is not None for parameter in trained.parameters())
        assert all(parameter.grad is None for parameter in frozen.parameters())
        assert all(parameter.grad is None for parameter in module.previous_encoder.parameters())


def test_recvae_refreshes_the_prior_after_each_encoder_phase() -> None:
    dataset = random_dataset()
    two = small_recvae(encoder_epochs=3).fit(dataset, trainer=one_epoch(epochs=2))
    seed_everything(0)  # as fit does: the same initial weights
    initial = small_recvae().build_module(dataset.n_users, dataset.n_items)
    # Within the first encoder phase the previous encoder is still the initial one.
    for name, tensor in two.autoencoder.previous_encoder.state_dict().items():
        torch.testing.assert_close(tensor, initial.encoder.state_dict()[name])
    three = small_recvae(encoder_epochs=3).fit(dataset, trainer=one_epoch(epochs=3))
    module = three.autoencoder
    # After the phase's last epoch it is the encoder as trained so far.
    for name, tensor in module.previous_encoder.state_dict().items():
        torch.testing.assert_close(tensor, module.encoder.state_dict()[name])
    assert not torch.equal(module.encoder.output.weight, initial.encoder.output.weight)
    assert three.phase == "joint"


def test_recvae_scores_are_deterministic() -> None:
    model = small_recvae().fit(random_dataset(), trainer=one_epoch(epochs=2))
    model.autoencoder.train()  # dropout and sampling are training-only: scoring must not use them
    users = torch.arange(10)
    torch.testing.assert_close(model.score(users), model.score(users), rtol=0, atol=0)


def test_recvae_training_reduces_the_loss() -> None:
    model = small_recvae().fit(
        random_dataset(n_users=60, n_items=30),
        trainer=one_epoch(epochs=16, batch_size=20, learning_rate=1e-2),
    )
    assert model.training_report is not None
    losses = [record["loss"] for record in model.training_report.history]
    assert losses[-1] < losses[0]
