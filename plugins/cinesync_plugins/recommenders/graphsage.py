"""GraphSAGE: inductive representations of users and items by aggregating sampled neighbourhoods.

Hamilton, Ying & Leskovec, "Inductive Representation Learning on Large Graphs", NeurIPS 2017, applied to the
bipartite user-item graph of the training interactions (nodes ``0..users-1`` the users, ``users + i`` item
``i``). A node's input features ``h⁰`` are a learned id embedding, plus for items, with ``genres``, a learned
projection of its genre multi-hot vector divided by its number of genres. Each of the ``K = len(fanouts)``
layers is the paper's GraphSAGE-mean with concatenation (Algorithm 1):

    h_N(v)ᵏ = mean{ hᵏ⁻¹_u : u ∈ N(v) },   hᵏ_v = normalise(σ(Wᵏ [hᵏ⁻¹_v ; h_N(v)ᵏ] + bᵏ))

with σ = ReLU and ``normalise`` the L2 normalisation; the last layer has no σ (a ReLU there would make every
representation non-negative and every score a cosine of non-negative vectors). A user's score for an item is the
cosine of their final representations divided by ``temperature``; training minimises the sampled softmax
cross-entropy of each observed pair against ``negatives`` uniform random items shared by the batch, or BPR
(Rendle et al. 2009) against the same items (``loss``). Negatives drawn per pair scored 0.060, 0.070 and 0.078
on ml-100k's validation split with 4, 32 and 128 of them (fan-outs [10, 5]), the last at ten minutes a fit;
shared, 512 of them cost one matrix product and scored 0.071 to 0.074 (BPR against them: 0.049).

**Neighbour sampling (training).** Every training step samples, for every node and every layer, a fixed number
of its neighbours uniformly without replacement (Floyd's algorithm, vectorised over the nodes): layer ``k`` of
``K`` averages over ``fanouts[K - k]`` of them, so the targets' own neighbourhoods (the last layer) are sampled
``fanouts[0]`` at a time, their neighbours' ``fanouts[1]``, and so on outwards, as in the paper's minibatch
Algorithm 2; the default is the paper's ``S₁ = 25, S₂ = 10``. A node with at most ``fanout`` neighbours keeps
all of them, so its sampled mean is its exact mean. Algorithm 2 computes only the nodes the batch's targets
reach; on these graphs two hops from a batch of 1024 pairs and its negatives reach nearly every node, so every
node is computed, as a sparse product with the sampled mean matrix (its transpose, built with it, serves the
backward pass). That is ten times faster on ml-100k than the per-target sampled trees of the authors'
implementation; as in Algorithm 2, a node's sample is shared by all the targets of the batch that reach it.
The samples and the batch's negatives are drawn from a seed that ``collate`` takes from the trainer's
generator, so seeded runs repeat exactly.

**Full neighbourhoods (inference).** Scoring computes every node's representation once, layer by layer, with the
exact mean over all its neighbours (a sparse row-normalised adjacency times the previous layer), then scores
users against items by one matrix product. Because the layers are functions of features and neighbourhoods,
not of node identities, the same weights embed a node over any graph: what makes GraphSAGE inductive. The
saved state is the weights (and genre features); the graph is rebuilt from the training interactions that every
saved model keeps, as :mod:`.lightgcn` does. Needs user-item pairs, and item genres with ``genres = true``.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional

from cinesync.errors import DataError
from cinesync.interfaces import ComponentConfig
from cinesync.train.torch_model import TorchRecommender
from cinesync.train.trainer import TrainerConfig
from cinesync_plugins.layers import init_embedding, interaction_pairs, ranking_loss, uniform_negatives
from cinesync_plugins.recommenders._matrix import SparseProduct, transpose

if TYPE_CHECKING:
    from cinesync.data.dataset import Dataset


def bipartite_neighbours(
    indptr: np.ndarray, indices: np.ndarray, n_users: int, n_items: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """CSR neighbour lists ``(node_indptr, node_indices)`` of the user-item graph of a user-major CSR matrix.

    Users are nodes ``0..n_users-1`` (neighbours: their items), item ``i`` is node ``n_users + i`` (neighbours:
    its users); one more node, ``n_users + n_items``, has no neighbours: the padding of sampled neighbourhoods.
    """
    item_indptr, item_users = transpose(indptr, indices, n_items)
    node_indptr = np.concatenate([indptr, indptr[-1] + item_indptr[1:], indptr[-1:] + item_indptr[-1:]])
    node_indices = np.concatenate([indices.astype(np.int64) + n_users, item_users.astype(np.int64)])
    return torch.from_numpy(node_indptr.astype(np.int64)), torch.from_numpy(node_indices)


def square_csr(counts: torch.Tensor, columns: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The ``(len(counts), len(counts))`` sparse CSR matrix whose row ``r`` holds the next ``counts[r]`` entries
    of ``columns`` and ``values``."""
    crow = torch.zeros(len(counts) + 1, dtype=torch.long)
    torch.cumsum(counts, 0, out=crow[1:])
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Sparse CSR tensor support is in beta", category=UserWarning
        )
        return torch.sparse_csr_tensor(crow, columns, values, (len(counts),) * 2, check_invariants=False)


def row_means(counts: torch.Tensor) -> torch.Tensor:
    """``1 / counts[r]`` repeated ``counts[r]`` times for each row ``r``: the values of a mean matrix."""
    return (1.0 / counts.clamp(min=1).float()).repeat_interleave(counts)


def mean_adjacency(node_indptr: torch.Tensor, node_indices: torch.Tensor) -> torch.Tensor:
    """``D⁻¹ A`` of the graph of :func:`bipartite_neighbours` (padding node left out), sparse CSR: times the
    node states, each node's mean over all its neighbours (zero for a node without any)."""
    degree = node_indptr[:-1].diff()
    return square_csr(degree, node_indices, row_means(degree))


def sampled_mean_adjacency(neighbours: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean matrix of the sampled neighbourhoods ``neighbours`` ``(nodes, f)`` (padded with node ``nodes``,
    as :func:`sample_neighbours` pads) and its transpose, both sparse CSR."""
    n_nodes = len(neighbours)
    valid = neighbours < n_nodes
    counts = valid.sum(1)
    # Row-major, so the rows come in order; torch's CSR products do not need sorted columns within a row.
    columns, values = neighbours[valid], row_means(counts)
    rows = torch.arange(n_nodes).repeat_interleave(counts)
    by_column = torch.argsort(columns, stable=True)
    return (
        square_csr(counts, columns, values),
        square_csr(torch.bincount(columns, minlength=n_nodes), rows[by_column], values[by_column]),
    )


def sample_neighbours(
    node_indptr: torch.Tensor,
    node_indices: torch.Tensor,
    nodes: torch.Tensor,
    fanout: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """``fanout`` neighbours of each of ``nodes`` (any shape), drawn uniformly without replacement.

    Returns shape ``nodes.shape + (fanout,)``. A node with at most ``fanout`` neighbours gets all of them, the
    rest of its row filled with the padding node (the last node of the lists, which has no neighbours). The
    draws are Floyd's algorithm run on every node at once: for ``j = d - fanout .. d - 1`` pick ``t`` uniform in
    ``[0, j]``, or ``j`` if ``t`` was already picked, which gives every ``fanout``-subset of the ``d``
    neighbours the same probability.
    """
    padding = len(node_indptr) - 2
    flat = nodes.reshape(-1)
    start = node_indptr[flat]
    degree = node_indptr[flat + 1] - start
    picked = torch.zeros(len(flat), fanout, dtype=torch.long)
    for step in range(fanout):
        last = degree - fanout + step
        candidate = (torch.rand(len(flat), generator=generator) * (last + 1)).long()
        taken = (picked[:, :step] == candidate.unsqueeze(1)).any(1)
        picked[:, step] = torch.where(taken, last, candidate)
    every = torch.arange(fanout).expand(len(flat), fanout)
    positions = torch.where((degree <= fanout).unsqueeze(1), every, picked)
    valid = positions < degree.unsqueeze(1)
    entries = (start.unsqueeze(1) + positions).clamp(max=len(node_indices) - 1)
    neighbours = torch.where(valid, node_indices[entries], padding)
    return neighbours.reshape(*nodes.shape, fanout)


def genre_features(dataset: Dataset) -> torch.Tensor:
    """Each item's genre multi-hot row divided by its number of genres, ``(n_items, n_genres)``."""
    from cinesync.data.requirements import missing_requirements
    from cinesync.evaluation.context import item_genres

    if missing_requirements(dataset, {"item_genres"}):
        raise DataError(
            f"graphsage with genres = true needs item genres (catalogue column 'genres'), which dataset "
            f"{dataset.name!r} does not provide; set genres = false"
        )
    multi_hot, _ = item_genres(dataset.catalog)
    return multi_hot / multi_hot.sum(1, keepdim=True).clamp(min=1)


class GraphSAGEModule(nn.Module):
    """Node features (id embeddings, optional item genre projection) and the K mean-aggregator layers."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int,
        layers: int,
        init_std: float,
        item_genres: torch.Tensor | None,
    ) -> None:
        super().__init__()
        self.users = init_embedding(nn.Embedding(n_users, dim), init_std)
        self.items = init_embedding(nn.Embedding(n_items, dim), init_std)
        self.genre_projection: nn.Linear | None = None
        if item_genres is not None:
            self.register_buffer("item_genres", item_genres.float())
            self.genre_projection = nn.Linear(item_genres.shape[1], dim, bias=False)
        self.aggregators = nn.ModuleList(nn.Linear(2 * dim, dim) for _ in range(layers))

    def node_features(self) -> torch.Tensor:
        """``h⁰`` of every node, users then items."""
        items = self.items.weight
        if self.genre_projection is not None:
            items = items + self.genre_projection(self.item_genres)
        return torch.cat([self.users.weight, items])

    def aggregate(self, layer: int, own: torch.Tensor, neighbourhood: torch.Tensor) -> torch.Tensor:
        """Layer ``layer`` of nodes with states ``own`` and neighbourhood means ``neighbourhood``."""
        hidden = self.aggregators[layer](torch.cat([own, neighbourhood], dim=-1))
        if layer < len(self.aggregators) - 1:
            hidden = functional.relu(hidden)
        return functional.normalize(hidden, dim=-1)

    def propagate(
        self, means: list[torch.Tensor], transposes: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Final representations of every node: layer ``k`` averages the previous states with ``means[k]``.

        ``means`` holds :func:`mean_adjacency` for every layer at inference, a :func:`sampled_mean_adjacency`
        per layer in training, whose ``transposes`` make the backward pass cheap.
        """
        state = self.node_features()
        for layer, mean in enumerate(means):
            # torch's own backward of a sparse product would transpose the matrix: the sampled ones come with it.
            neighbourhood = (
                mean @ state if transposes is None else SparseProduct.apply(mean, transposes[layer], state)
            )
            state = self.aggregate(layer, state, neighbourhood)
        return state


class GraphSAGE(TorchRecommender):
    """GraphSAGE-mean (Hamilton et al., 2017) on the user-item graph, trained on sampled neighbourhoods."""

    class Config(ComponentConfig):
        loss: Literal["bpr", "softmax"] = Field(
            "softmax",
            description="'softmax': cross-entropy of each positive against the batch's negatives; 'bpr': "
            "-log σ(s⁺ - s⁻) averaged over them.",
        )
        # 512 shared negatives: 128 scored 0.0615 on ml-100k's validation split and 1024 no better than 512
        # (0.0751 and 0.0676 against 0.0709 and 0.0769 with fanouts [10, 5] and [25, 10]), at twice the cost.
        negatives: int = Field(
            512, ge=1, description="Uniform random items drawn per batch, the negatives of every pair in it."
        )
        dim: int = Field(64, ge=1, description="Size of the node features and of every layer's output.")
        # The paper's S₁ = 25, S₂ = 10 (two layers): on ml-100k's validation split 0.0769 against 0.0709 for
        # [10, 5], at the same cost per step (every node is computed whatever the fan-outs).
        fanouts: list[int] = Field(
            default_factory=lambda: [25, 10],
            min_length=1,
            description="Neighbours sampled per node at each hop from a training target, outwards; "
            "their number is the number of layers K.",
        )
        # 0.1 rather than 0.2 (0.0600 against 0.0551 on ml-100k's validation split, 4 negatives per pair).
        temperature: float = Field(
            0.1, gt=0, description="Scores are cosines of final representations divided by this."
        )
        init_std: float = Field(0.1, gt=0, description="Standard deviation of the initial id embeddings.")
        genres: bool = Field(
            False, description="Add a learned projection of each item's genres to its id embedding."
        )

    config: Config

    def __init__(self, config: ComponentConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        #: The item genre features the module was built with (set by fit or by loading; None without genres).
        self.item_genres: torch.Tensor | None = None
        self._neighbour_lists: tuple[torch.Tensor, torch.Tensor] | None = None
        self._adjacency: torch.Tensor | None = None
        self._representations: torch.Tensor | None = None

    def default_trainer(self) -> TrainerConfig:
        # Every step propagates over the whole graph, so steps are the cost. On ml-100k's validation split
        # Adam at 5e-3 with batches of 1024 reached 0.0769 at epoch 46 (0.074 from epoch 24 on, 0.0742 when
        # capped at 30 epochs); at 1e-2 it peaked at 0.0712 (epoch 10), at 1e-2 with a cosine decay at 0.0708,
        # batches of 2048 at 1e-2 reached 0.0729 and of 4096 at 2e-2 0.0472. 30 epochs keep a fit on ml-100k
        # near a minute on an idle two-core machine.
        return TrainerConfig(
            epochs=30, batch_size=1024, learning_rate=5e-3, optimizer="adam", patience=4, eval_every=2
        )

    def build_module(self, n_users: int, n_items: int) -> GraphSAGEModule:
        config = self.config
        if config.genres and self.item_genres is None:
            raise RuntimeError("GraphSAGE.build_module needs the item genres: fit or load the model")
        genres = self.item_genres if config.genres else None
        return GraphSAGEModule(n_users, n_items, config.dim, len(config.fanouts), config.init_std, genres)

    @property
    def graph(self) -> GraphSAGEModule:
        module = self.trained_module
        assert isinstance(module, GraphSAGEModule)
        return module

    @property
    def neighbour_lists(self) -> tuple[torch.Tensor, torch.Tensor]:
        """CSR neighbour lists of the training graph (:func:`bipartite_neighbours`), on the CPU, built once."""
        if self._neighbour_lists is None:
            assert self._seen_indptr is not None and self._seen_indices is not None
            self._neighbour_lists = bipartite_neighbours(
                self._seen_indptr, self._seen_indices, self.n_users, self.n_items
            )
        return self._neighbour_lists

    @property
    def adjacency(self) -> torch.Tensor:
        """The training graph's :func:`mean_adjacency`, on the module's device, built once."""
        if self._adjacency is None:
            indptr, indices = self.neighbour_lists
            self._adjacency = mean_adjacency(indptr, indices).to(self.device)
        return self._adjacency

    def _fit(self, dataset: Dataset, *, validation: Dataset | None, trainer: TrainerConfig | None) -> None:
        self._neighbour_lists = self._adjacency = self._representations = None
        self.item_genres = genre_features(dataset) if self.config.genres else None
        super()._fit(dataset, validation=validation, trainer=trainer)
        # The trainer may have restored the best epoch's weights after the last scoring.
        self._representations = None

    def training_examples(self, dataset: Dataset) -> dict[str, torch.Tensor]:
        """Every distinct (user, item) pair of ``dataset`` once."""
        return interaction_pairs(dataset)

    def collate(
        self, examples: dict[str, torch.Tensor], generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """The pairs and the seed of the batch's negatives and neighbour samples (``sample_seed``).

        Both are shared by the whole batch, so they are drawn in ``loss`` from this seed; it is drawn from
        ``generator`` and repeated on every row, so the batch stays row-shaped (it can be split across
        processes, each of which then draws the same samples).
        """
        seed = torch.randint(0, 2**62, (1,), generator=generator)
        return {**examples, "sample_seed": seed.expand(len(examples["users"]))}

    def neighbour_samples(self, generator: torch.Generator) -> list[torch.Tensor]:
        """Each layer's sampled neighbours of every node (``(nodes, f)``, layer 1 first).

        The last layer aggregates the targets' own neighbours, so it takes ``fanouts[0]``; layer ``k`` of ``K``
        takes ``fanouts[K - k]``.
        """
        indptr, indices = self.neighbour_lists
        nodes = torch.arange(len(indptr) - 2)  # every node but the padding
        return [
            sample_neighbours(indptr, indices, nodes, fanout, generator)
            for fanout in reversed(self.config.fanouts)
        ]

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The configured ranking loss of each pair against the batch's shared uniform negatives, every node
        represented over the batch's sampled neighbourhoods."""
        # A gradient step is about to change the weights: the cached representations are stale from here on.
        self._representations = None
        generator = torch.Generator().manual_seed(int(batch["sample_seed"][0]))
        adjacencies = [sampled_mean_adjacency(sample) for sample in self.neighbour_samples(generator)]
        nodes = self.graph.propagate(
            [mean.to(self.device) for mean, _ in adjacencies],
            [transpose.to(self.device) for _, transpose in adjacencies],
        )
        negatives = uniform_negatives(1, self.n_items, self.config.negatives, generator)[0].to(self.device)
        users, items = nodes[: self.n_users], nodes[self.n_users :]
        user = users[batch["users"]]
        temperature = self.config.temperature
        positive_scores = (user * items[batch["items"]]).sum(-1) / temperature
        negative_scores = user @ items[negatives].t() / temperature
        return ranking_loss(self.config.loss, positive_scores, negative_scores)

    def representations(self) -> torch.Tensor:
        """Every node's final representation over its full neighbourhood, computed once after training."""
        if self._representations is None:
            with torch.no_grad():
                self._representations = self.graph.propagate([self.adjacency] * len(self.config.fanouts))
        return self._representations

    def score(
        self, users: torch.Tensor, items: torch.Tensor | None = None, context: Any = None
    ) -> torch.Tensor:
        nodes = self.representations()
        item_nodes = nodes[self.n_users :] if items is None else nodes[self.n_users + items.to(self.device)]
        scores = nodes[users.to(self.device)] @ item_nodes.t() / self.config.temperature
        return scores.float().cpu()

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.item_genres = tensors.get("item_genres")
        super().load_state_tensors(tensors)
        self._neighbour_lists = self._adjacency = self._representations = None
