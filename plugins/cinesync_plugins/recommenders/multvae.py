"""Mult-VAE: a variational autoencoder of users' interaction rows with a multinomial likelihood.

Liang, Krishnan, Hoffman & Jebara, "Variational Autoencoders for Collaborative Filtering", WWW 2018 (Mult-VAE^PR).
A user is their binary training row ``x_u`` over the catalogue. The encoder maps the L2-normalised row (with
dropout on its entries during training) through a tanh MLP to the mean and log-variance of a Gaussian latent
``z_u``; the decoder maps ``z_u`` through a tanh MLP to logits whose softmax ``π(z_u)`` is a distribution over
items. Training maximises the multinomial log-likelihood ``Σ_i x_ui log π_i(z_u)`` minus ``β`` times the KL
divergence of the encoder's Gaussian from the standard normal, with ``β`` annealed linearly from 0 to
``anneal_cap`` over ``total_anneal_steps`` gradient steps (the "partially regularised" objective, section 2.2.2).
Scoring a user decodes the encoder's mean of their training row, with no sampling or dropout. Needs user-item
pairs only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional

from cinesync.interfaces import ComponentConfig
from cinesync.train.torch_model import TorchRecommender
from cinesync.train.trainer import TrainerConfig
from cinesync_plugins.layers import mlp
from cinesync_plugins.recommenders._matrix import sparse_rows

if TYPE_CHECKING:
    from cinesync.data.dataset import Dataset


def encoder_input(rows: torch.Tensor, dropout: nn.Module, *, drop: bool) -> torch.Tensor:
    """The L2-normalised binary ``rows``, with ``dropout`` on their entries when ``drop`` (the denoising input)."""
    inputs = functional.normalize(rows, dim=1)
    return dropout(inputs) if drop else inputs


def reparameterise(mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """A draw ``z = μ + σ·ε`` of the Gaussian ``N(μ, diag(exp(log_variance)))``, differentiable in μ and σ."""
    return mean + torch.randn_like(mean) * torch.exp(0.5 * log_variance)


def multinomial_log_likelihood(logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``Σ_i x_ui log softmax(logits_u)_i`` for each row ``x_u``: shape ``(B,)``."""
    return (functional.log_softmax(logits, dim=1) * rows).sum(1)


class UserRowRecommender(TorchRecommender):
    """Base of the autoencoders (Mult-VAE, RecVAE): a training example is a user's binary training row, and a
    user's scores are their row decoded by the module's ``scores(rows)`` (item logits, deterministic)."""

    def __init__(self, config: ComponentConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self._training_rows: torch.Tensor | None = None

    def training_examples(self, dataset: Dataset) -> dict[str, torch.Tensor]:
        """Every user once; ``collate`` turns them into their binary training rows."""
        indptr, indices, _ = dataset.csr()
        self._training_rows = sparse_rows(indptr, indices, dataset.n_items)
        return {"users": torch.arange(dataset.n_users)}

    def collate(
        self, examples: dict[str, torch.Tensor], generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """The users' dense binary training rows."""
        assert self._training_rows is not None, "collate needs training_examples(dataset) first"
        return {"rows": self._training_rows.index_select(0, examples["users"]).to_dense()}

    def score(
        self, users: torch.Tensor, items: torch.Tensor | None = None, context: Any = None
    ) -> torch.Tensor:
        rows = self.seen_mask(users).float().to(self.device)
        scores = self.trained_module.scores(rows)
        return (scores if items is None else scores[:, items.to(self.device)]).float().cpu()


class VariationalAutoencoder(nn.Module):
    """Encoder ``items -> hidden -> 2·latent`` and decoder ``latent -> hidden -> items``, tanh between layers.

    ``anneal_step`` counts the training steps taken, so the KL weight survives checkpoints and resumption.
    """

    def __init__(self, n_items: int, hidden: int, latent: int, dropout: float) -> None:
        super().__init__()
        self.encoder = mlp([n_items, hidden, 2 * latent], activation=nn.Tanh)
        self.decoder = mlp([latent, hidden, n_items], activation=nn.Tanh)
        self.input_dropout = nn.Dropout(dropout)
        self.register_buffer("anneal_step", torch.zeros((), dtype=torch.long))

    def encode(self, rows: torch.Tensor, *, drop: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and log-variance of ``q(z | row)`` for each binary row (``drop``: input dropout on)."""
        mean, log_variance = self.encoder(encoder_input(rows, self.input_dropout, drop=drop)).chunk(2, dim=1)
        return mean, log_variance

    def scores(self, rows: torch.Tensor) -> torch.Tensor:
        """Item logits decoded from the encoder's mean: deterministic, whatever the module's mode."""
        mean, _ = self.encode(rows, drop=False)
        return self.decoder(mean)


class MultVAE(UserRowRecommender):
    """Mult-VAE^PR (Liang et al., 2018): a multinomial VAE of interaction rows with an annealed KL weight."""

    class Config(ComponentConfig):
        hidden: int = Field(600, ge=1, description="Width of the encoder's and decoder's hidden layer.")
        latent: int = Field(200, ge=1, description="Dimension of the latent user representation z.")
        dropout: float = Field(
            0.5, ge=0, lt=1, description="Dropout on the normalised input row in training."
        )
        anneal_cap: float = Field(0.2, ge=0, description="Largest KL weight β reached by the annealing.")
        total_anneal_steps: int = Field(
            2000, ge=1, description="Gradient steps over which β grows linearly from 0 to 1 (capped)."
        )

    config: Config

    def default_trainer(self) -> TrainerConfig:
        # Liang et al. use Adam at 1e-3 with batches of 500 users; with the few hundred users of MovieLens
        # 100K, batches of 128 give several steps per epoch, so annealing and early stopping see enough steps.
        return TrainerConfig(
            epochs=300, batch_size=128, learning_rate=1e-3, optimizer="adam", patience=10, eval_every=2
        )

    def build_module(self, n_users: int, n_items: int) -> VariationalAutoencoder:
        config = self.config
        return VariationalAutoencoder(n_items, config.hidden, config.latent, config.dropout)

    @property
    def autoencoder(self) -> VariationalAutoencoder:
        module = self.trained_module
        assert isinstance(module, VariationalAutoencoder)
        return module

    def kl_weight(self) -> float:
        """The current β: ``min(anneal_cap, steps taken / total_anneal_steps)``."""
        steps = int(self.autoencoder.anneal_step)
        return min(self.config.anneal_cap, steps / self.config.total_anneal_steps)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean over users of ``-Σ_i x_ui log softmax(logits)_i + β·KL(q(z|x) ‖ N(0, I))``."""
        module = self.autoencoder
        rows = batch["rows"]
        mean, log_variance = module.encode(rows, drop=module.training)
        latent = reparameterise(mean, log_variance) if module.training else mean
        log_likelihood = multinomial_log_likelihood(module.decoder(latent), rows)
        kl = 0.5 * (log_variance.exp() + mean.pow(2) - 1.0 - log_variance).sum(1)
        loss = (-log_likelihood + self.kl_weight() * kl).mean()
        if module.training and torch.is_grad_enabled():
            module.anneal_step += 1
        return loss
