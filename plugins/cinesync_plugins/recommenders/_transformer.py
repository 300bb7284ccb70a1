"""The transformer encoder that ``transformer_sequential`` and ``enhanced_sasrec`` share.

A pre-norm transformer (Vaswani et al., NeurIPS 2017) written over
:func:`torch.nn.functional.scaled_dot_product_attention`, so that a block can rotate queries and keys (rotary
position embeddings, Su et al., "RoFormer", 2021) and take an additive attention bias per head. The latter is why
``enhanced_sasrec`` cannot use ``torch.nn.TransformerEncoderLayer`` as ``sasrec`` does: in evaluation mode under
``no_grad`` its fused fast path returns NaN for a float mask with non-zero entries (torch 2.13), which is exactly
what a learned bias is.

:class:`TransformerSequenceEncoder` with ``positions = "learned"`` computes what SASRec's encoder does (scaled
item embeddings plus learned positions, dropout, pre-norm blocks with GELU feed-forward layers of width
``4·dim``, a final layer norm); only the parameter initialisation of the attention projections differs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from torch import nn
from torch.nn import functional

from cinesync_plugins.recommenders._sequential import PAD, SequenceEncoder
from cinesync_plugins.recommenders.sasrec import causal_attention_mask

if TYPE_CHECKING:
    from collections.abc import Sequence

PositionEncoding = Literal["rotary", "learned"]


class RotaryEmbedding(nn.Module):
    """The rotation angles of RoPE for one attention head of ``head_dim`` (even) coordinates.

    ``angles(length)`` gives ``(cos, sin)`` of ``m·θ_j``, ``θ_j = base^(-2j/head_dim)``, for positions
    ``m < length``, each ``(length, head_dim/2)``; :func:`rotate` applies them to queries or keys.
    """

    def __init__(self, head_dim: int, base: float = 10_000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary position embeddings need an even head size, got {head_dim}")
        frequencies = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("frequencies", frequencies, persistent=False)
        self.frequencies: torch.Tensor

    def angles(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(length, dtype=torch.float32, device=self.frequencies.device)
        angles = positions.unsqueeze(1) * self.frequencies.unsqueeze(0)
        return angles.cos(), angles.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x`` (..., L, h) with coordinate pair ``(j, j + h/2)`` of position ``m`` rotated by angle ``m·θ_j``."""
    half = x.shape[-1] // 2
    first, second = x[..., :half].float(), x[..., half:].float()
    rotated = torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)
    return rotated.to(x.dtype)


class TransformerBlock(nn.Module):
    """A pre-norm transformer block whose multi-head attention may rotate queries and keys (RoPE).

    ``h ← h + Dropout(W_o · Attention(LN(h)))``, then ``h ← h + Dropout(FFN(LN(h)))`` with a GELU
    feed-forward layer of width ``4·dim``; attention weights get dropout too.
    """

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.attention_norm = nn.LayerNorm(dim)
        self.query_key_value = nn.Linear(dim, 3 * dim)
        self.attention_output = nn.Linear(dim, dim)
        self.feed_forward_norm = nn.LayerNorm(dim)
        self.feed_forward = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim)
        )
        self.dropout = nn.Dropout(dropout)
        self.attention_dropout = dropout

    def forward(
        self,
        hidden: torch.Tensor,
        mask: torch.Tensor,
        rotation: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``hidden`` (B, L, d) refined. ``mask`` broadcasts to (B, heads, L, L): boolean, True where a query may
        attend to a key, or float, added to the attention logits (``-inf`` blocks)."""
        batch, length, dim = hidden.shape
        query, key, value = (
            self.query_key_value(self.attention_norm(hidden))
            .view(batch, length, 3, self.heads, dim // self.heads)
            .permute(2, 0, 3, 1, 4)
        )
        if rotation is not None:
            query, key = rotate(query, *rotation), rotate(key, *rotation)
        if mask.is_floating_point():
            mask = mask.to(query.dtype)
        attended = functional.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, dropout_p=self.attention_dropout if self.training else 0.0
        )
        attended = attended.transpose(1, 2).reshape(batch, length, dim)
        hidden = hidden + self.dropout(self.attention_output(attended))
        return hidden + self.dropout(self.feed_forward(self.feed_forward_norm(hidden)))


class TransformerSequenceEncoder(SequenceEncoder):
    """Scaled item embeddings (plus learned positions), causal pre-norm blocks (with RoPE), a final layer norm."""

    def __init__(
        self,
        n_items: int,
        dim: int,
        max_length: int,
        layers: int,
        heads: int,
        dropout: float,
        positions: PositionEncoding,
    ) -> None:
        super().__init__(n_items, dim)
        self.position_embedding = nn.Embedding(max_length, dim) if positions == "learned" else None
        self.rotary = RotaryEmbedding(dim // heads) if positions == "rotary" else None
        self.embedding_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, dropout) for _ in range(layers))
        self.final_norm = nn.LayerNorm(dim)
        self.heads = heads
        self.scale = dim**0.5

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        """Scaled item embeddings, plus learned position embeddings (the most recent item is the last one)."""
        hidden = self.item_embedding(inputs) * self.scale
        if self.position_embedding is not None:
            total = self.position_embedding.num_embeddings
            positions = torch.arange(total - inputs.shape[1], total, device=inputs.device)
            hidden = hidden + self.position_embedding(positions)
        return hidden

    def causal_mask(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, 1, L, L), True where position ``t`` may attend: items up to ``t``; padding attends to itself."""
        return ~causal_attention_mask(inputs, 1).unsqueeze(1)

    def encode(self, inputs: torch.Tensor, masks: Sequence[torch.Tensor]) -> torch.Tensor:
        """Hidden states (B, L, d) of ``inputs`` with one attention mask per block (see TransformerBlock)."""
        hidden = self.embedding_dropout(self.embed(inputs)) * (inputs != PAD).unsqueeze(-1)
        rotation = None if self.rotary is None else self.rotary.angles(inputs.shape[1])
        for block, mask in zip(self.blocks, masks, strict=True):
            hidden = block(hidden, mask, rotation)
        return self.final_norm(hidden)

    def states(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.encode(inputs, [self.causal_mask(inputs)] * len(self.blocks))
