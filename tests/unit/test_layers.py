"""The shared layers and losses of the neural recommenders (cinesync_plugins.layers)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cinesync_plugins.layers import (
    bpr_loss,
    in_batch_softmax_loss,
    init_embedding,
    mlp,
    sampled_softmax_loss,
    uniform_negatives,
)


def test_mlp_maps_the_first_size_to_the_last_with_activations_between() -> None:
    stack = mlp([8, 16, 4], dropout=0.5)
    kinds = [type(layer) for layer in stack]
    assert kinds == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert stack(torch.randn(3, 8)).shape == (3, 4)


def test_mlp_final_activation_ends_the_stack_in_the_activation() -> None:
    stack = mlp([4, 2], activation=nn.Tanh, final_activation=True)
    assert [type(layer) for layer in stack] == [nn.Linear, nn.Tanh]


def test_mlp_needs_an_input_and_an_output_size() -> None:
    with pytest.raises(ValueError, match="at least an input and an output"):
        mlp([4])


def test_init_embedding_draws_weights_with_the_given_spread() -> None:
    torch.manual_seed(0)
    embedding = init_embedding(nn.Embedding(2000, 50), std=0.01)
    assert embedding.weight.std().item() == pytest.approx(0.01, rel=0.05)


def test_uniform_negatives_repeat_with_the_same_seed_and_stay_in_the_catalogue() -> None:
    first = uniform_negatives(100, 7, 3, torch.Generator().manual_seed(1))
    second = uniform_negatives(100, 7, 3, torch.Generator().manual_seed(1))
    assert first.shape == (100, 3)
    assert torch.equal(first, second)
    assert int(first.min()) >= 0 and int(first.max()) < 7


def test_bpr_loss_is_the_mean_negative_log_sigmoid_of_the_margins() -> None:
    positive = torch.tensor([1.0, 0.0])
    negative = torch.tensor([[0.0, 2.0], [0.0, -1.0]])
    margins = [1.0, -1.0, 0.0, 1.0]
    expected = sum(math.log1p(math.exp(-m)) for m in margins) / 4
    assert bpr_loss(positive, negative).item() == pytest.approx(expected)


def test_bpr_loss_accepts_one_negative_per_positive() -> None:
    positive, negative = torch.tensor([2.0, 1.0]), torch.tensor([0.0, 1.0])
    assert bpr_loss(positive, negative).item() == pytest.approx(bpr_loss(positive, negative[:, None]).item())


def test_sampled_softmax_loss_is_the_cross_entropy_of_the_positive() -> None:
    positive = torch.tensor([2.0])
    negative = torch.tensor([[1.0, 0.0]])
    expected = -math.log(math.exp(2) / (math.exp(2) + math.exp(1) + 1))
    assert sampled_softmax_loss(positive, negative).item() == pytest.approx(expected)


def test_sampled_softmax_log_q_correction_recovers_the_full_softmax_loss() -> None:
    # Negatives proposed from a skewed q: with log(n·q) subtracted, the sum over the samples estimates the
    # full softmax's normaliser without bias (the log adds one that shrinks with n), so the corrected loss
    # lands near the full loss; uncorrected, it is off by about log n.
    generator = torch.Generator().manual_seed(0)
    logits = torch.tensor([0.5, 1.0, -1.0, 0.0, 2.0, -0.5])
    proposal = torch.tensor([0.4, 0.3, 0.1, 0.1, 0.1])  # over items 1..5; item 0 is the positive
    full = (torch.logsumexp(logits, 0) - logits[0]).item()
    rows, n = 2_000, 500
    negatives = torch.multinomial(proposal, rows * n, replacement=True, generator=generator).view(rows, n)
    log_q = torch.cat([torch.zeros(rows, 1), (n * proposal[negatives]).log()], dim=1)
    positive_logits = logits[0].expand(rows)
    negative_logits = logits[negatives + 1]
    corrected = sampled_softmax_loss(positive_logits, negative_logits, log_q).item()
    uncorrected = sampled_softmax_loss(positive_logits, negative_logits).item()
    assert corrected == pytest.approx(full, abs=0.05)
    assert abs(uncorrected - full) > 1.0


def test_in_batch_softmax_loss_uses_the_other_candidates_as_negatives() -> None:
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    candidates = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    logits = query @ candidates.t() / 0.5
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])).item()
    assert in_batch_softmax_loss(query, candidates, temperature=0.5).item() == pytest.approx(expected)


def test_in_batch_softmax_log_q_lowers_the_weight_of_frequent_negatives() -> None:
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    candidates = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    plain = in_batch_softmax_loss(query, candidates, temperature=1.0)
    # Candidate 1 is frequent (high log q): as query 0's negative it counts for less, so the loss falls.
    corrected = in_batch_softmax_loss(query, candidates, temperature=1.0, log_q=torch.tensor([0.0, 2.0]))
    logits = query @ candidates.t() - torch.tensor([0.0, 2.0])
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])).item()
    assert corrected.item() == pytest.approx(expected)
    assert corrected.item() != pytest.approx(plain.item())
