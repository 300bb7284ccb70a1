"""Training checkpoints in safe formats, written atomically.

A checkpoint is a directory of four files, none of them a pickle:

* ``model.safetensors``: the module's ``state_dict``;
* ``optimizer.safetensors`` + ``optimizer.json``: the optimizer's per-parameter tensors (Adam's moments and
  step counts) and everything else of its ``state_dict`` (param groups, scalars) as JSON;
* ``trainer.safetensors``: random generator states (torch, the trainer's sampling generator, numpy's key),
  the epoch's example order and the learned task weights;
* ``trainer.json``: position (epoch, batch within the epoch, optimizer step), the scheduler's and gradient
  scaler's state, Python's and numpy's remaining generator state, early-stopping state and the history so far.

Under ``checkpoint_dir`` the latest checkpoint is ``step-<optimizer step>/`` (mid-epoch) or ``epoch-<n>/`` (at
an epoch's end) and the best-scoring one ``best-epoch-<n>/``; the pointer files ``latest.json`` and ``best.json``
name them. A checkpoint directory is written under a temporary
name and renamed into place, and a pointer is replaced with ``os.replace``; both are atomic on POSIX, so a
run killed at any moment leaves the previous checkpoint intact and pointed to. Superseded directories are
removed after the pointer moves.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from cinesync.errors import CineSyncError

Kind = Literal["latest", "best"]
#: Directory-name patterns of each kind's checkpoints, for removing superseded ones.
_PATTERNS: dict[Kind, tuple[str, ...]] = {"latest": ("step-*", "epoch-*"), "best": ("best-*",)}


@dataclass
class Checkpoint:
    """What a checkpoint holds: tensors by file, plus the JSON state of the trainer and optimizer."""

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)


# -- optimizer and random state in safe formats ----------------------------------------------------------------
def split_optimizer_state(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer ``state_dict`` as (tensors named ``<param index>.<key>``, JSON-compatible rest)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in state_dict["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def join_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`split_optimizer_state`."""
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = tensor
    for index, entries in meta["scalars"].items():
        state.setdefault(int(index), {}).update(entries)
    return {"state": state, "param_groups": meta["param_groups"]}


def random_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The global generators' states (torch CPU and CUDA, numpy, Python) as (tensors, JSON)."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for device, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{device}"] = cuda_state
    name, keys, position, has_gauss, cached = np.random.get_state(legacy=True)
    tensors["rng.numpy_keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, python_state, gauss_next = random.getstate()
    meta = {
        "numpy": [name, int(position), int(has_gauss), float(cached)],
        "python": [version, list(python_state), gauss_next],
    }
    return tensors, meta


def restore_random_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Set the global generators to a state from :func:`random_state`."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted(name for name in tensors if name.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[name] for name in cuda])
    name, position, has_gauss, cached = meta["numpy"]
    keys = tensors["rng.numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state((name, keys, position, has_gauss, cached))
    version, python_state, gauss_next = meta["python"]
    random.setstate((version, tuple(python_state), gauss_next))


# -- files -----------------------------------------------------------------------------------------------------
def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, allow_nan=True), encoding="utf-8")


def _replace_atomically(path: Path, payload: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _write_json(temporary, payload)
    os.replace(temporary, path)


def save_checkpoint(directory: str | Path, kind: Kind, name: str, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` as ``directory/name`` and point the ``kind`` pointer at it; returns its path.

    ``name`` must match the kind's pattern (``step-*``/``epoch-*`` for ``latest``, ``best-*`` for ``best``).
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    target = root / name
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        save_file(checkpoint.model, str(staging / "model.safetensors"))
        optimizer_tensors, optimizer_meta = (
            split_optimizer_state(checkpoint.optimizer) if checkpoint.optimizer else ({}, {})
        )
        save_file(optimizer_tensors, str(staging / "optimizer.safetensors"))
        _write_json(staging / "optimizer.json", optimizer_meta)
        save_file(checkpoint.tensors, str(staging / "trainer.safetensors"))
        _write_json(staging / "trainer.json", checkpoint.state)
        if target.exists():  # the same step saved again (e.g. after a resume): the new copy wins
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _replace_atomically(root / f"{kind}.json", {"path": target.name})
    for pattern in _PATTERNS[kind]:
        for stale in root.glob(pattern):
            if stale != target:
                shutil.rmtree(stale, ignore_errors=True)
    return target


def checkpoint_path(directory: str | Path, kind: Kind) -> Path | None:
    """The directory the ``kind`` pointer of ``directory`` names, or None when there is none yet."""
    pointer = Path(directory) / f"{kind}.json"
    if not pointer.exists():
        return None
    target = Path(directory) / json.loads(pointer.read_text(encoding="utf-8"))["path"]
    if not target.is_dir():
        raise CineSyncError(
            f"{pointer} names {target.name}, which is missing; delete {pointer} to start over"
        )
    return target


def load_checkpoint(directory: str | Path, kind: Kind = "latest") -> Checkpoint | None:
    """The ``kind`` checkpoint of ``directory``, or None when none was written."""
    path = checkpoint_path(directory, kind)
    if path is None:
        return None
    optimizer_meta = json.loads((path / "optimizer.json").read_text(encoding="utf-8"))
    optimizer_tensors = load_file(str(path / "optimizer.safetensors"))
    return Checkpoint(
        model=load_file(str(path / "model.safetensors")),
        optimizer=join_optimizer_state(optimizer_tensors, optimizer_meta) if optimizer_meta else {},
        tensors=load_file(str(path / "trainer.safetensors")),
        state=json.loads((path / "trainer.json").read_text(encoding="utf-8")),
    )
