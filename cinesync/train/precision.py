"""Mixed precision: which autocast dtype a run uses, and whether gradients need loss scaling.

Inside ``torch.autocast`` the operations that profit (matrix products, convolutions, linear layers) run in
bfloat16 or float16 while reductions and losses stay in float32 (Micikevicius et al., "Mixed Precision
Training", ICLR 2018). bfloat16 has float32's exponent range, so it needs no loss scaling; float16 does, through
``torch.amp.GradScaler``. Element-wise products and sums are not autocast: a model whose forward pass is only
those (BPR-MF's dot products) runs in float32 even with mixed precision on.

``mixed_precision`` values: ``off``; ``bf16``; ``fp16`` (with gradient scaling); ``auto``: bfloat16 on a CPU with
native bfloat16 instructions (AVX-512 BF16 or AMX) and off on other CPUs, where emulated bfloat16 is slower
than float32; bfloat16 on a CUDA device that supports it, else float16 with gradient scaling.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Precision:
    """How the forward pass runs: ``dtype`` None means float32 without autocast."""

    device_type: str
    dtype: torch.dtype | None
    scale_gradients: bool

    @property
    def name(self) -> str:
        return {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self) -> torch.autocast:
        """The autocast context of the forward pass (disabled when ``dtype`` is None)."""
        return torch.autocast(
            self.device_type, dtype=self.dtype or torch.bfloat16, enabled=self.dtype is not None
        )

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, enabled only for float16."""
        return torch.amp.GradScaler(self.device_type, enabled=self.scale_gradients)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX-512 BF16 or AMX tiles)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve_precision(mode: str, device: torch.device) -> Precision:
    """The :class:`Precision` of a ``mixed_precision`` setting on ``device``."""
    kind = device.type
    if mode == "off":
        return Precision(kind, None, False)
    if mode == "bf16":
        return Precision(kind, torch.bfloat16, False)
    if mode == "fp16":
        return Precision(kind, torch.float16, True)
    if kind == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision(kind, torch.bfloat16, False)
        return Precision(kind, torch.float16, True)
    return Precision(kind, torch.bfloat16 if cpu_has_native_bf16() else None, False)
