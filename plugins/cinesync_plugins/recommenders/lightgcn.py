"""LightGCN: collaborative filtering by linear propagation of embeddings over the user-item graph.

He, Deng, Wang, Li, Zhang & Wang, "LightGCN: Simplifying and Powering Graph Convolution Network for
Recommendation", SIGIR 2020. Users and items get ego embeddings ``E⁽⁰⁾``; each of ``layers`` propagation steps
multiplies them by the symmetrically normalised adjacency of the bipartite interaction graph,
``E⁽ᵏ⁺¹⁾ = D^-½ A D^-½ E⁽ᵏ⁾`` (no feature transforms, no non-linearities), and the final embedding of a node is
the mean of its ``layers + 1`` layer embeddings. A user's score for an item is the dot product of their final
embeddings. Training minimises the BPR loss (Rendle et al., UAI 2009) over observed pairs and uniformly sampled
negatives, plus an L2 penalty on the ego embeddings the batch uses. Needs user-item pairs only.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pydantic import Field
from torch import nn

from cinesync.interfaces import ComponentConfig
from cinesync.train.torch_model import TorchRecommender
from cinesync.train.trainer import TrainerConfig
from cinesync_plugins.layers import UniformNegativeSampling, bpr_loss, init_embedding
from cinesync_plugins.recommenders._matrix import SparseProduct

if TYPE_CHECKING:
    from cinesync.data.dataset import Dataset


def normalized_adjacency(indptr: np.ndarray, indices: np.ndarray, n_users: int, n_items: int) -> torch.Tensor:
    """``D^-½ A D^-½`` of the bipartite graph of the binary CSR user x item matrix, as a sparse CSR tensor.

    Nodes ``0..n_users-1`` are the users and ``n_users + i`` item ``i``; an interaction ``(u, i)`` is the pair
    of entries ``(u, n_users + i)`` and ``(n_users + i, u)``, each ``1 / sqrt(deg(u)·deg(i))``. CSR, because
    torch multiplies it by a dense matrix several times faster than a COO tensor on the CPU.
    """
    users = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(indptr))
    items = indices.astype(np.int64) + n_users
    user_degree = np.diff(indptr).astype(np.float64)
    item_degree = np.bincount(indices, minlength=n_items).astype(np.float64)
    weight = 1.0 / np.sqrt(user_degree[users] * item_degree[items - n_users])
    coordinates = torch.sparse_coo_tensor(
        torch.from_numpy(np.stack([np.concatenate([users, items]), np.concatenate([items, users])])),
        torch.from_numpy(np.concatenate([weight, weight])).float(),
        (n_users + n_items, n_users + n_items),
        check_invariants=False,
    ).coalesce()
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Sparse CSR tensor support is in beta", category=UserWarning
        )
        return coordinates.to_sparse_csr()


class LightGCNModule(nn.Module):
    """The ego embeddings of users and items and the layer-mean propagation over a given adjacency."""

    def __init__(self, n_users: int, n_items: int, dim: int, layers: int, init_std: float) -> None:
        super().__init__()
        self.users = init_embedding(nn.Embedding(n_users, dim), init_std)
        self.items = init_embedding(nn.Embedding(n_items, dim), init_std)
        self.layers = layers

    def propagate(self, adjacency: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Final user and item embeddings: the mean of ``E⁽⁰⁾ .. E⁽ᴷ⁾`` with ``E⁽ᵏ⁺¹⁾ = adjacency · E⁽ᵏ⁾``.

        ``adjacency`` must be symmetric (as :func:`normalized_adjacency` is): the backward pass relies on it.
        """
        layer = torch.cat([self.users.weight, self.items.weight])
        total = layer
        for _ in range(self.layers):
            layer = SparseProduct.apply(adjacency, adjacency, layer)  # symmetric: its own transpose
            total = total + layer
        final = total / (self.layers + 1)
        return final[: self.users.num_embeddings], final[self.users.num_embeddings :]


class LightGCN(UniformNegativeSampling, TorchRecommender):
    """LightGCN (He et al., 2020): BPR-trained embeddings averaged over K graph propagation layers.

    The saved state is the ego embeddings; the adjacency is rebuilt from the training interactions saved with
    every model, and the propagated embeddings are computed once for scoring and cached.
    """

    class Config(ComponentConfig):
        dim: int = Field(64, ge=1, description="Embedding size.")
        layers: int = Field(3, ge=0, description="Propagation layers K (0 is plain matrix factorisation).")
        l2: float = Field(
            1e-4, ge=0, description="L2 penalty on the ego embeddings a batch uses, halved, per example."
        )
        negatives: int = Field(1, ge=1, description="Negative items sampled per observed pair.")
        init_std: float = Field(0.1, gt=0, description="Standard deviation of the initial ego embeddings.")

    config: Config

    def __init__(self, config: ComponentConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self._adjacency: torch.Tensor | None = None
        self._propagated: tuple[torch.Tensor, torch.Tensor] | None = None

    def default_trainer(self) -> TrainerConfig:
        # He et al. train with Adam at 1e-3 and batches of 2048 for hundreds of epochs. Every step propagates
        # over the whole graph, so the number of steps is the cost: on ml-100k's validation split, batches of
        # 8192 at 2e-2 reached in 40 epochs what batches of 2048 at 5e-3 reached in 45, in 12 s rather than
        # 30 s. Validation is noisy (it oscillates by 0.005 between evaluations), hence the patience.
        return TrainerConfig(
            epochs=200, batch_size=8192, learning_rate=2e-2, optimizer="adam", patience=4, eval_every=5
        )

    def build_module(self, n_users: int, n_items: int) -> LightGCNModule:
        config = self.config
        return LightGCNModule(n_users, n_items, config.dim, config.layers, config.init_std)

    @property
    def graph(self) -> LightGCNModule:
        module = self.trained_module
        assert isinstance(module, LightGCNModule)
        return module

    @property
    def adjacency(self) -> torch.Tensor:
        """The normalised adjacency of the training interactions, on the module's device (built once)."""
        if self._adjacency is None:
            assert self._seen_indptr is not None and self._seen_indices is not None
            adjacency = normalized_adjacency(
                self._seen_indptr, self._seen_indices, self.n_users, self.n_items
            )
            self._adjacency = adjacency.to(self.device)
        return self._adjacency

    def _fit(self, dataset: Dataset, *, validation: Dataset | None, trainer: TrainerConfig | None) -> None:
        self._adjacency = self._propagated = None
        super()._fit(dataset, validation=validation, trainer=trainer)
        # The trainer may have restored the best epoch's weights after the last scoring.
        self._propagated = None

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """BPR on the propagated embeddings plus ``l2 / 2`` times the batch's squared ego norms per example."""
        # A gradient step is about to change the weights: the cached propagation is stale from here on.
        self._propagated = None
        graph = self.graph
        users, items = graph.propagate(self.adjacency)
        user = users[batch["users"]]
        positive_scores = (user * items[batch["positives"]]).sum(-1)
        negative_scores = (user.unsqueeze(1) * items[batch["negatives"]]).sum(-1)
        ego = (
            graph.users(batch["users"]).pow(2).sum()
            + graph.items(batch["positives"]).pow(2).sum()
            + graph.items(batch["negatives"]).pow(2).sum() / batch["negatives"].shape[1]
        )
        return bpr_loss(positive_scores, negative_scores) + self.config.l2 * ego / (2 * len(user))

    def score(
        self, users: torch.Tensor, items: torch.Tensor | None = None, context: Any = None
    ) -> torch.Tensor:
        if self._propagated is None:
            with torch.no_grad():
                self._propagated = self.graph.propagate(self.adjacency)
        user_embeddings, item_embeddings = self._propagated
        if items is not None:
            item_embeddings = item_embeddings[items.to(self.device)]
        return (user_embeddings[users.to(self.device)] @ item_embeddings.t()).float().cpu()

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        super().load_state_tensors(tensors)
        self._adjacency = self._propagated = None
