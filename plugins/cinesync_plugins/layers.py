"""Building blocks the neural recommenders share: MLP stacks, embedding initialisation, negative sampling and the
ranking losses.

Each model file composes these instead of carrying its own copy. The losses are the ones that train for top-k
ranking rather than rating error:

* :func:`bpr_loss`: Bayesian Personalized Ranking (Rendle et al., UAI 2009), the pairwise logistic loss;
* :func:`sampled_softmax_loss`: softmax cross-entropy of the positive against sampled negatives, with the logQ
  correction that makes it an unbiased estimate of the full softmax's gradient whatever the proposal
  distribution (Bengio & Senécal, IEEE TNN 2008; Yi et al., "Sampling-Bias-Corrected Neural Modeling for
  Large Corpus Item Recommendations", RecSys 2019);
* :func:`in_batch_softmax_loss`: the same with the other positives of the batch as negatives (Yi et al. 2019),
  where ``log_q`` is each candidate's in-batch frequency, optionally with shared uniform negatives appended
  (mixed negative sampling, Yang et al., WWW 2020);

* :func:`gbce_loss`: generalised binary cross-entropy over sampled negatives, which counters the
  overconfidence that negative sampling gives BCE (Petrov & Macdonald, "gSASRec: Reducing Overconfidence in
  Sequential Recommendation Trained with Negative Sampling", RecSys 2023);
* :func:`ranking_loss`: one of these, or He et al.'s pointwise log loss (NCF, WWW 2017), chosen by name.

Every loss returns the mean over the batch, as :class:`~cinesync.train.torch_model.TorchRecommender.loss`
requires.
"""

from __future__ import annotations

from itertools import pairwise
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn
from torch.nn import functional

if TYPE_CHECKING:
    from cinesync.data.dataset import Dataset


def mlp(
    dims: list[int] | tuple[int, ...],
    dropout: float = 0.0,
    activation: type[nn.Module] = nn.ReLU,
    final_activation: bool = False,
) -> nn.Sequential:
    """Linear layers ``dims[0] -> dims[1] -> ... -> dims[-1]`` with ``activation`` between them.

    Dropout (when ``dropout > 0``) follows each hidden activation; the output layer gets the activation only
    with ``final_activation`` and never dropout, so the stack can end in logits or scores.
    """
    if len(dims) < 2:
        raise ValueError(f"an MLP needs at least an input and an output size, got dims={list(dims)}")
    layers: list[nn.Module] = []
    n_linear = len(dims) - 1
    for index, (width_in, width_out) in enumerate(pairwise(dims)):
        layers.append(nn.Linear(width_in, width_out))
        is_last = index == n_linear - 1
        if not is_last or final_activation:
            layers.append(activation())
        if not is_last and dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def init_embedding(embedding: nn.Embedding, std: float) -> nn.Embedding:
    """Draw ``embedding``'s weights from N(0, std²) in place and return it.

    A small ``std`` keeps initial dot-product scores near zero, where the logistic and softmax losses have
    their largest gradients.
    """
    nn.init.normal_(embedding.weight, std=std)
    return embedding


def interaction_pairs(dataset: Dataset) -> dict[str, torch.Tensor]:
    """Every distinct (user, item) pair of ``dataset`` once, user-major: ``{"users": (P,), "items": (P,)}``.

    The training examples of the pairwise models (``training_examples`` of the trainer's example protocol).
    """
    indptr, indices, _ = dataset.csr()
    users = torch.repeat_interleave(torch.arange(dataset.n_users), torch.from_numpy(indptr).diff())
    return {"users": users, "items": torch.from_numpy(indices)}


def with_uniform_negatives(
    pairs: dict[str, torch.Tensor], n_items: int, count: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """A training batch of ``pairs``: ``{"users", "positives", "negatives"}`` with ``count`` uniform negatives
    per pair (see :func:`uniform_negatives`)."""
    negatives = uniform_negatives(len(pairs["users"]), n_items, count, generator)
    return {"users": pairs["users"], "positives": pairs["items"], "negatives": negatives}


def uniform_negatives(n: int, n_items: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``(n, count)`` item indices drawn uniformly (with replacement) from ``range(n_items)`` with ``generator``.

    A draw may be one of the user's own items; at recommendation-data densities that is rare enough that
    rejecting it is not worth a per-batch lookup.
    """
    return torch.randint(0, n_items, (n, count), generator=generator)


def bpr_loss(positive_scores: torch.Tensor, negative_scores: torch.Tensor) -> torch.Tensor:
    """Mean of ``-log σ(s⁺ - s⁻)`` over every (positive, negative) pair.

    ``positive_scores`` has shape ``(B,)`` and ``negative_scores`` ``(B, n)`` (``n`` negatives per positive)
    or ``(B,)`` for one each.
    """
    if negative_scores.dim() == positive_scores.dim():
        negative_scores = negative_scores.unsqueeze(-1)
    return -functional.logsigmoid(positive_scores.unsqueeze(-1) - negative_scores).mean()


def sampled_softmax_loss(
    positive_logits: torch.Tensor, negative_logits: torch.Tensor, log_q: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean softmax cross-entropy of each positive against its sampled negatives, logQ-corrected.

    ``positive_logits`` has shape ``(B,)`` and ``negative_logits`` ``(B, n)``. ``log_q``, when given, is the
    log-probability with which the sampler proposes each candidate, broadcastable to ``(B, 1 + n)`` with the
    positive first: subtracting it from the logits corrects for the proposal distribution (Bengio & Senécal
    2008). With uniform negatives it is a constant that cancels, so leave it None.
    """
    logits = torch.cat([positive_logits.unsqueeze(-1), negative_logits], dim=-1)
    if log_q is not None:
        logits = logits - log_q
    # The positive is column 0, so the cross-entropy is logsumexp(logits) - logits[:, 0].
    return (torch.logsumexp(logits, dim=-1) - logits[:, 0]).mean()


def in_batch_softmax_loss(
    query: torch.Tensor,
    candidates: torch.Tensor,
    temperature: float | torch.Tensor,
    log_q: torch.Tensor | None = None,
    *,
    extra_negatives: torch.Tensor | None = None,
    candidate_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean softmax cross-entropy of query ``b`` against candidate ``b``, the batch's other candidates being
    its negatives (Yi et al. 2019).

    ``query`` and ``candidates`` have shape ``(B, d)``; the logits are ``query @ candidates.T / temperature``
    (``temperature`` may be a learned scalar tensor). ``extra_negatives`` ``(M, d)`` are further candidates
    shared by every query, appended after the batch's: uniformly sampled items make this mixed negative
    sampling (Yang et al., "Mixed Negative Sampling for Learning Two-tower Neural Networks in
    Recommendations", WWW 2020). ``log_q`` (shape ``(B,)``, or ``(B + M,)`` with extra negatives) is the
    log-probability of each candidate appearing in a batch, typically its log training frequency: popular items
    are over-represented as negatives, and subtracting it removes that bias. ``candidate_ids`` (same length as
    ``log_q``) names each candidate's item: another column holding query ``b``'s own positive item is an
    accidental hit, not a negative, and is masked out.
    """
    all_candidates = candidates if extra_negatives is None else torch.cat([candidates, extra_negatives])
    # Dividing the (B, d) queries rather than the (B, B + M) logits: the same numbers, a fraction of the work.
    logits = (query / temperature) @ all_candidates.t()
    if log_q is not None:
        logits = logits - log_q.unsqueeze(0)
    targets = torch.arange(len(query), device=query.device)
    if candidate_ids is not None:
        hits = candidate_ids.unsqueeze(0) == candidate_ids[: len(query)].unsqueeze(1)
        hits[targets, targets] = False
        logits = logits.masked_fill(hits, float("-inf"))
    return functional.cross_entropy(logits, targets)


def gbce_loss(
    positive_logits: torch.Tensor, negative_logits: torch.Tensor, n_items: int, calibration: float
) -> torch.Tensor:
    """Mean gBCE (Petrov & Macdonald 2023) of positives ``(B,)`` against uniform negatives ``(B, n)``.

    ``-β log σ(s⁺) - Σ_j log(1 - σ(s⁻_j))`` with ``β = α (t (1 - 1/α) + 1/α)``, where ``α = n / (n_items - 1)``
    is the negative sampling rate and ``t = calibration`` in [0, 1]: ``t = 0`` is plain BCE (β = 1), ``t = 1``
    makes the predicted probabilities calibrated to the full-catalogue ones. Averaged over the B positives.
    """
    n_negatives = negative_logits.shape[-1]
    alpha = n_negatives / max(1, n_items - 1)
    beta = alpha * (calibration * (1.0 - 1.0 / alpha) + 1.0 / alpha)
    positive_term = -beta * functional.logsigmoid(positive_logits)
    negative_term = -functional.logsigmoid(-negative_logits).sum(-1)
    return (positive_term + negative_term).mean()


RankingLoss = Literal["bpr", "bce", "softmax"]


def ranking_loss(
    kind: RankingLoss, positive_scores: torch.Tensor, negative_scores: torch.Tensor
) -> torch.Tensor:
    """The mean ``kind`` loss of positives ``(B,)`` against their negatives ``(B, n)``: ``"bpr"``,
    ``"softmax"`` (sampled, no correction: the negatives are uniform) or ``"bce"`` (pointwise log loss)."""
    if kind == "bpr":
        return bpr_loss(positive_scores, negative_scores)
    if kind == "softmax":
        return sampled_softmax_loss(positive_scores, negative_scores)
    # He et al.'s pointwise log loss, averaged over every labelled pair (positives and negatives alike).
    logits = torch.cat([positive_scores.unsqueeze(1), negative_scores], dim=1)
    labels = torch.zeros_like(logits)
    labels[:, 0] = 1.0
    return functional.binary_cross_entropy_with_logits(logits, labels)


class UniformNegativeSampling:
    """Mixin for a :class:`~cinesync.train.torch_model.TorchRecommender` trained on (user, item) pairs with
    ``config.negatives`` uniform random negatives each: supplies ``training_examples`` and ``collate``."""

    #: The number of items negatives are drawn from, set by ``training_examples`` (so collate works before fit).
    catalogue_size: int = 0
    config: Any

    def training_examples(self, dataset: Dataset) -> dict[str, torch.Tensor]:
        """Every distinct (user, item) pair of ``dataset`` once."""
        self.catalogue_size = dataset.n_items
        return interaction_pairs(dataset)

    def collate(
        self, examples: dict[str, torch.Tensor], generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """The pairs with ``config.negatives`` uniform random items each."""
        return with_uniform_negatives(examples, self.catalogue_size, self.config.negatives, generator)
