"""Properties of the neural collaborative-filtering models that their conformance checks would not catch."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional

from cinesync.testing.conformance import toy_dataset
from cinesync.train.trainer import TrainerConfig
from cinesync_plugins.recommenders._neural import NO_GENRE, PADDING_GENRE, padded_genre_ids
from cinesync_plugins.recommenders.cross_attention_ncf import CrossAttentionNCF, CrossAttentionNCFModule
from cinesync_plugins.recommenders.deep_ncf import DeepNCF, GenreAttentionPooling
from cinesync_plugins.recommenders.ncf import NeuMF, NeuMFModule
from cinesync_plugins.recommenders.simple_ncf import SimpleNCF

TWO_EPOCHS = TrainerConfig(epochs=2, batch_size=32, progress=False, early_stopping_metric=None)


def test_neumf_fuses_gmf_and_mlp_with_its_output_layer() -> None:
    torch.manual_seed(0)
    module = NeuMFModule(n_users=3, n_items=4, dim=2, mlp_dim=3, layers=[4, 2], dropout=0.0).eval()
    user, item = 1, 2
    gmf = module.gmf_users.weight[user] * module.gmf_items.weight[item]
    tower_input = torch.cat([module.mlp_users.weight[user], module.mlp_items.weight[item]])
    first = module.tower.input
    weight = torch.cat([first.user.weight, first.item.weight], dim=1)
    hidden = torch.relu(weight @ tower_input + first.user.bias)
    second = module.tower.hidden[0]
    hidden = torch.relu(second.weight @ hidden + second.bias)
    expected = module.output.weight[0] @ torch.cat([gmf, hidden]) + module.output.bias[0]
    actual = module(torch.tensor([user]), torch.tensor([[item]]))
    assert torch.allclose(actual, expected.reshape(1, 1), atol=1e-6)


@pytest.mark.parametrize("model_class", [NeuMF, SimpleNCF, DeepNCF, CrossAttentionNCF])
def test_batched_scores_equal_per_pair_scores(model_class: type) -> None:
    model = model_class().fit(toy_dataset(), trainer=TWO_EPOCHS)
    users = torch.arange(model.n_users)
    with torch.no_grad():
        grid = model.score(users)
        for user, item in [(0, 0), (3, 7), (11, 29), (23, 14)]:
            pair = model.pair_scores(torch.tensor([user]), torch.tensor([[item]]))
            assert torch.allclose(grid[user, item], pair[0, 0], atol=1e-5)


def test_scoring_in_chunks_equals_scoring_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    model = NeuMF().fit(toy_dataset(), trainer=TWO_EPOCHS)
    users = torch.arange(model.n_users)
    with torch.no_grad():
        at_once = model.score(users)
        monkeypatch.setattr(NeuMF, "max_pairs", 7)  # fewer pairs than one user's row: one user per chunk
        chunked = model.score(users)
    assert torch.allclose(at_once, chunked, atol=1e-6)


def test_genre_ids_pad_short_rows_and_mark_items_without_genres() -> None:
    data = toy_dataset()
    data.catalog.loc[data.catalog.index[0], "genres"] = []
    ids = padded_genre_ids(data)
    assert ids.shape == (data.n_items, 2)
    assert ids[0].tolist() == [NO_GENRE, PADDING_GENRE]
    drama_only = [row for row, genres in enumerate(data.catalog["genres"]) if genres == ["Drama"]]
    assert (ids[drama_only, 1] == PADDING_GENRE).all()
    assert (ids[drama_only, 0] > NO_GENRE).all()


def test_genre_attention_weights_sum_to_one_and_ignore_padding() -> None:
    torch.manual_seed(0)
    pooling = GenreAttentionPooling(n_genres=6, dim=4)
    rows = torch.tensor(
        [[2, 3, 4], [5, PADDING_GENRE, PADDING_GENRE], [NO_GENRE, PADDING_GENRE, PADDING_GENRE]]
    )
    weights = pooling.weights(rows)
    assert torch.allclose(weights.sum(-1), torch.ones(3))
    assert (weights[rows == PADDING_GENRE] == 0).all()
    # A single real genre gets all the weight, so the pooled vector is that genre's embedding.
    assert torch.allclose(pooling(rows)[1], pooling.genres.weight[5])


def test_deep_ncf_scores_a_saved_model_without_the_dataset(tmp_path: object) -> None:
    from cinesync.serve.artifacts import load_artifact, save_artifact

    model = DeepNCF().fit(toy_dataset(), trainer=TWO_EPOCHS)
    save_artifact(model, f"{tmp_path}/deep_ncf", name="deep_ncf")
    loaded = load_artifact(f"{tmp_path}/deep_ncf")
    assert isinstance(loaded, DeepNCF)
    assert loaded.item_genre_ids is not None and torch.equal(loaded.item_genre_ids, model.item_genre_ids)


def _cross_attention_module() -> CrossAttentionNCFModule:
    data = toy_dataset()
    torch.manual_seed(0)
    genre_ids = padded_genre_ids(data)
    profiles = torch.rand(data.n_users, int(genre_ids.max()) + 1)
    return CrossAttentionNCFModule(
        genre_ids, profiles, dim=8, heads=2, experts=3, expert_layers=[8], dropout=0.0
    )


def test_cross_attention_gate_weights_sum_to_one() -> None:
    module = _cross_attention_module()
    vectors = module.pair_vectors(torch.arange(5), torch.arange(10).unsqueeze(0))
    gates = module.gate_weights(vectors)
    assert gates.shape == (5, 10, 3)
    assert torch.allclose(gates.sum(-1), torch.ones(5, 10))
    assert (gates >= 0).all()


def test_cross_attention_genre_head_learns() -> None:
    module = _cross_attention_module()
    items = torch.arange(30)
    optimizer = torch.optim.Adam(module.parameters(), lr=0.05)
    before = module.genre_loss(items).item()
    for _ in range(20):
        optimizer.zero_grad()
        module.genre_loss(items).backward()
        optimizer.step()
    assert module.genre_loss(items).item() < 0.5 * before


def test_cross_attention_loss_has_a_ranking_and_a_genre_head() -> None:
    model = CrossAttentionNCF().fit(toy_dataset(), trainer=TWO_EPOCHS)
    batch = model.collate(model.training_examples(toy_dataset()), torch.Generator().manual_seed(0))
    losses = model.loss(batch)
    assert set(losses) == set(model.task_heads()) == {"ranking", "genre"}
    assert all(loss.dim() == 0 and torch.isfinite(loss) for loss in losses.values())
    assert model.training_report is not None
    assert "task_weights" in model.training_report.history[-1]


@pytest.mark.parametrize("loss", ["bpr", "bce", "softmax"])
def test_every_ranking_loss_trains_to_a_finite_model(loss: str) -> None:
    model = NeuMF(loss=loss).fit(toy_dataset(), trainer=TWO_EPOCHS)
    with torch.no_grad():
        assert torch.isfinite(model.score(torch.arange(model.n_users))).all()


def test_bce_loss_is_the_pointwise_log_loss_of_positives_and_negatives() -> None:
    from cinesync_plugins.layers import ranking_loss

    positives, negatives = torch.tensor([2.0, -1.0]), torch.tensor([[0.5, -3.0], [1.0, 0.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    logits = torch.cat([positives.unsqueeze(1), negatives], dim=1)
    expected = functional.binary_cross_entropy_with_logits(logits, labels)
    assert torch.allclose(ranking_loss("bce", positives, negatives), expected)
