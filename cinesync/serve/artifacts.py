"""Artifacts: a trained model as a directory that loads without the training data.

Layout (format version 1)::

    manifest.toml        what it is: component id, distribution and version, resolved params, training options,
                         fit information, the dataset it was trained on
    weights.safetensors  learned tensors ("model.*") and the training interactions used to exclude seen items
    mappings.json        user and item ids (index -> the source's id) and item titles
    metrics.json         evaluation results
    MODEL_CARD.md        a short human-readable summary
    checksums.json       sha256 of every file above

Writes are atomic: everything goes to a temporary sibling directory that replaces the target in one rename, so
a reader sees the old artifact or the new one, never a mix. Nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

from cinesync import __version__
from cinesync.errors import ArtifactError, CineSyncError

if TYPE_CHECKING:
    from cinesync.interfaces import Recommender

FORMAT_VERSION = 1
FILES = ("manifest.toml", "weights.safetensors", "mappings.json", "metrics.json", "MODEL_CARD.md")


def component_info_for(cls: type) -> Any:
    """The registry entry whose target is ``cls``, or None for a class that is not an entry point."""
    from cinesync import registry

    target = f"{cls.__module__}:{cls.__qualname__}"
    for info in registry.list_components("recommender"):
        if info.target == target:
            return info
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _toml_safe(value: Any) -> Any:
    """TOML has no null: drop None values (a Config restores its own defaults for them)."""
    if isinstance(value, dict):
        return {k: _toml_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_toml_safe(v) for v in value if v is not None]
    return value


def save_artifact(
    model: Recommender,
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    metrics: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    dataset: str | None = None,
    evaluation: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` to the directory ``path`` atomically and return it."""
    import torch
    from safetensors.torch import save_file

    model._check_fitted()
    assert model.users is not None and model.items is not None
    target = Path(path)
    info = component_info_for(type(model))
    if info is None:
        raise ArtifactError(
            f"{type(model).__name__} is not registered as a cinesync.recommenders entry point, so an artifact "
            "could not be loaded again; register it (see CONTRIBUTING.md) before saving"
        )
    tensors = {
        f"model.{key}": value.detach().cpu().contiguous() for key, value in model.state_tensors().items()
    }
    tensors.update({f"base.{key}": torch.from_numpy(value) for key, value in model.base_state().items()})
    params = model.get_params()
    manifest = {
        "artifact": {
            "format_version": FORMAT_VERSION,
            "cinesync_version": __version__,
            "created": time.time(),
        },
        "model": {
            "kind": "model",
            "name": name or info.id,
            "component": info.id,
            "distribution": info.distribution,
            "component_version": info.version,
            "params": params,
            "training": training or {},
            "fit_info": model.fit_info,
        },
        "data": {"dataset": dataset or "", "n_users": model.n_users, "n_items": model.n_items},
    }
    if evaluation:
        manifest["evaluation"] = evaluation
    with staged_directory(target) as staging:
        (staging / "manifest.toml").write_text(tomli_w.dumps(_toml_safe(manifest)), encoding="utf-8")
        save_file(
            tensors, str(staging / "weights.safetensors"), metadata={"format_version": str(FORMAT_VERSION)}
        )
        mappings = {
            "users": model.users.to_json(),
            "items": model.items.to_json(),
            "item_titles": model.item_titles or [],
        }
        (staging / "mappings.json").write_text(json.dumps(mappings), encoding="utf-8")
        write_card_and_checksums(staging, _model_card(manifest), metrics or {}, FILES)
    return target


@contextmanager
def staged_directory(target: Path) -> Iterator[Path]:
    """A temporary sibling of ``target`` to fill; it replaces ``target`` in one rename when the block ends.

    On any error the staging directory is removed and ``target`` is left as it was.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        _replace_directory(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_card_and_checksums(
    staging: Path, card: list[str], metrics: dict[str, Any], files: tuple[str, ...]
) -> None:
    """Write metrics.json, MODEL_CARD.md (``card`` plus a metrics table) and the sha256 of ``files``."""
    (staging / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    if metrics:
        card = [*card, "", "## Test metrics", "", "| metric | value |", "| --- | --- |"]
        card += [f"| {k} | {v:.4f} |" for k, v in metrics.items() if isinstance(v, int | float)]
    (staging / "MODEL_CARD.md").write_text("\n".join(card) + "\n", encoding="utf-8")
    checksums = {file: _sha256(staging / file) for file in files}
    (staging / "checksums.json").write_text(json.dumps(checksums, indent=2), encoding="utf-8")


def _replace_directory(staging: Path, target: Path) -> None:
    if target.exists():
        retired = target.with_name(f".{target.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(target, retired)
        os.replace(staging, target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, target)


def _model_card(manifest: dict[str, Any]) -> list[str]:
    model, data = manifest["model"], manifest["data"]
    return [
        f"# {model['name']}",
        "",
        f"- component: `{model['component']}` from {model['distribution']} {model['component_version']}",
        f"- trained on: {data['dataset'] or 'unknown data'} ({data['n_users']} users, {data['n_items']} items)",
        f"- parameters: `{json.dumps(model['params'])}`",
        f"- written by cinesync {__version__}",
    ]


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    import tomllib

    file = Path(path) / "manifest.toml"
    if not file.is_file():
        raise ArtifactError(f"{path} is not a cinesync artifact: it has no manifest.toml")
    return tomllib.loads(file.read_text(encoding="utf-8"))


def verify_artifact(path: str | os.PathLike[str]) -> None:
    """Raise :class:`ArtifactError` unless every file is present and matches its checksum."""
    root = Path(path)
    checksum_file = root / "checksums.json"
    if not checksum_file.is_file():
        raise ArtifactError(f"{root} is not a complete cinesync artifact: checksums.json is missing")
    expected = json.loads(checksum_file.read_text(encoding="utf-8"))
    for file, digest in expected.items():
        if not (root / file).is_file():
            raise ArtifactError(f"{root}: {file} is missing")
        if _sha256(root / file) != digest:
            raise ArtifactError(f"{root}: {file} does not match its checksum; the artifact is corrupted")


def load_artifact(path: str | os.PathLike[str]) -> Recommender:
    """Rebuild the model saved at ``path``: verify, build from the recorded component and params, load weights.

    An ensemble artifact (:mod:`cinesync.ensemble`) is loaded as an :class:`~cinesync.ensemble.Ensemble`."""
    from safetensors.torch import load_file

    from cinesync import registry
    from cinesync.data.dataset import IdMap

    root = Path(path)
    if not root.is_dir():
        raise ArtifactError(f"no artifact at {root}: not a directory")
    verify_artifact(root)
    manifest = read_manifest(root)
    if "ensemble" in manifest:
        from cinesync.ensemble import load_ensemble

        return load_ensemble(root)
    version = manifest.get("artifact", {}).get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{root}: artifact format version {version} is not supported (expected {FORMAT_VERSION})"
        )
    spec = manifest["model"]
    try:
        model = registry.build("recommender", spec["component"], **spec.get("params", {}))
    except CineSyncError as error:
        raise ArtifactError(f"{root}: cannot rebuild component {spec['component']!r}: {error}") from error
    tensors = load_file(str(root / "weights.safetensors"))
    mappings = json.loads((root / "mappings.json").read_text(encoding="utf-8"))
    base = {
        key.removeprefix("base."): value.numpy() for key, value in tensors.items() if key.startswith("base.")
    }
    model.restore_base_state(
        IdMap.from_json(mappings["users"], kind="user"),
        IdMap.from_json(mappings["items"], kind="item"),
        base,
        mappings.get("item_titles") or None,
    )
    model.fit_info = dict(spec.get("fit_info", {}))
    model.load_state_tensors(
        {key.removeprefix("model."): value for key, value in tensors.items() if key.startswith("model.")}
    )
    return model


def read_metrics(path: str | os.PathLike[str]) -> dict[str, Any]:
    file = Path(path) / "metrics.json"
    return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
