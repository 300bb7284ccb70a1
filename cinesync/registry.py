"""Lazy entry-point discovery of components.

Every component (built-in or third-party) is an entry point in one group per kind; the entry-point name is the
component id and its value the class. Listing reads package metadata only; a class is imported the first time
it is built, and an import failure becomes a :class:`~cinesync.errors.PluginLoadError` for that component alone.

Ids: bare ids (``ease``) belong to the ``cinesync`` distribution; third-party ids must be namespaced
(``acme.sasrec``). When two distributions claim one id, building it is an error naming both, and the qualified
form ``distribution:id`` picks one.

Environment:

* ``CINESYNC_DISABLE_PLUGIN_AUTOLOAD=1``: only cinesync's own components.
* ``CINESYNC_LOAD_PLUGINS=dist-a,dist-b``: of the third-party distributions, only these.
* ``CINESYNC_BLOCK=acme.sasrec,dist:id,dist-b``: hide these components or whole distributions.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any

from cinesync.errors import AmbiguousComponentError, PluginLoadError, UnknownComponentError

#: Entry-point group of each kind.
GROUPS: dict[str, str] = {
    "recommender": "cinesync.recommenders",
    "encoder": "cinesync.encoders",
    "fusion": "cinesync.fusions",
    "metric": "cinesync.metrics",
    "context_signal": "cinesync.context_signals",
}
CORE_DISTRIBUTION = "cinesync"
_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_\-]*(\.[a-z0-9][a-z0-9_\-]*)*$")


def _normalise_distribution(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class ComponentInfo:
    """What the metadata says about one component, read without importing it."""

    kind: str
    id: str
    distribution: str
    version: str
    target: str
    #: Why this entry cannot be built (e.g. an un-namespaced third-party id), or None.
    problem: str | None = None

    @property
    def qualified_id(self) -> str:
        return f"{self.distribution}:{self.id}"

    @property
    def is_builtin(self) -> bool:
        return _normalise_distribution(self.distribution) == CORE_DISTRIBUTION

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "qualified_id": self.qualified_id}


def _env_list(name: str) -> set[str]:
    return {part.strip() for part in os.environ.get(name, "").split(",") if part.strip()}


def _distribution_allowed(distribution: str) -> bool:
    normalised = _normalise_distribution(distribution)
    if normalised == CORE_DISTRIBUTION:
        return True
    if os.environ.get("CINESYNC_DISABLE_PLUGIN_AUTOLOAD", "").lower() in ("1", "true", "yes"):
        return False
    allowed = {_normalise_distribution(d) for d in _env_list("CINESYNC_LOAD_PLUGINS")}
    return not allowed or normalised in allowed


def _blocked(info: ComponentInfo) -> bool:
    blocked = _env_list("CINESYNC_BLOCK")
    if not blocked:
        return False
    normalised = _normalise_distribution(info.distribution)
    return bool(
        {info.id, f"{normalised}:{info.id}", info.qualified_id} & blocked
        or normalised in {_normalise_distribution(b) for b in blocked if ":" not in b and "." not in b}
    )


def _validate_id(component_id: str, distribution: str) -> str | None:
    if not _ID_PATTERN.match(component_id):
        return f"id {component_id!r} is not a lower-case dotted name"
    if _normalise_distribution(distribution) != CORE_DISTRIBUTION and "." not in component_id:
        return (
            f"third-party id {component_id!r} must be namespaced (e.g. 'acme.{component_id}'): "
            "bare ids belong to cinesync"
        )
    return None


_overrides: dict[tuple[str, str], type] = {}
_class_cache: dict[tuple[str, str, str], type] = {}


def _check_kind(kind: str) -> None:
    if kind not in GROUPS:
        raise ValueError(f"unknown component kind {kind!r}; kinds are {', '.join(GROUPS)}")


def list_components(kind: str | None = None, *, include_blocked: bool = False) -> list[ComponentInfo]:
    """Every discoverable component (of ``kind``), from package metadata only: nothing is imported."""
    kinds = [kind] if kind else list(GROUPS)
    found: list[ComponentInfo] = []
    for each in kinds:
        _check_kind(each)
        for entry_point in metadata.entry_points(group=GROUPS[each]):
            dist = getattr(entry_point, "dist", None)
            distribution = dist.name if dist is not None else "unknown"
            version = dist.version if dist is not None else "unknown"
            if not _distribution_allowed(distribution):
                continue
            info = ComponentInfo(
                kind=each,
                id=entry_point.name,
                distribution=distribution,
                version=version,
                target=entry_point.value,
                problem=_validate_id(entry_point.name, distribution),
            )
            if include_blocked or not _blocked(info):
                found.append(info)
        for (override_kind, override_id), cls in _overrides.items():
            if override_kind == each:
                found.append(
                    ComponentInfo(each, override_id, "override", "-", f"{cls.__module__}:{cls.__qualname__}")
                )
    # Editable and regular installs of one distribution can both be on the path: keep one row each.
    unique = {(i.kind, i.id, _normalise_distribution(i.distribution)): i for i in found}
    return sorted(unique.values(), key=lambda i: (i.kind, not i.is_builtin, i.id))


def resolve(kind: str, ref: str) -> ComponentInfo:
    """The single component ``ref`` (``id`` or ``distribution:id``) names, or a precise error."""
    _check_kind(kind)
    distribution, _, component_id = ref.rpartition(":")
    if (kind, ref) in _overrides:
        cls = _overrides[(kind, ref)]
        return ComponentInfo(kind, ref, "override", "-", f"{cls.__module__}:{cls.__qualname__}")
    candidates = [c for c in list_components(kind, include_blocked=True) if c.id == component_id]
    if distribution:
        candidates = [
            c
            for c in candidates
            if _normalise_distribution(c.distribution) == _normalise_distribution(distribution)
        ]
    if not candidates:
        known = sorted({c.id for c in list_components(kind)})
        close = sorted(
            {k for k in known if component_id in k or k in component_id}
            | set(difflib.get_close_matches(component_id, known, n=3, cutoff=0.6))
        )
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownComponentError(
            f"no {kind} named {ref!r} is installed.{hint} Installed {kind}s: {', '.join(known) or 'none'}. "
            "Run 'cinesync plugins list' to see every component."
        )
    allowed = [c for c in candidates if not _blocked(c)]
    if not allowed:
        raise UnknownComponentError(f"{kind} {ref!r} is blocked by CINESYNC_BLOCK")
    if len(allowed) > 1:
        names = " and ".join(f"{c.distribution} {c.version}" for c in allowed)
        choices = ", ".join(repr(c.qualified_id) for c in allowed)
        raise AmbiguousComponentError(
            f"{kind} id {component_id!r} is claimed by {names}; name one of {choices} instead"
        )
    return allowed[0]


def load(kind: str, ref: str) -> type:
    """Import and validate the class behind ``ref``; failures raise :class:`PluginLoadError`."""
    from cinesync.interfaces import ensure_component_of_kind

    info = resolve(kind, ref)
    if info.distribution == "override":
        return _overrides[(kind, ref)]
    key = (kind, info.qualified_id, info.version)
    if key in _class_cache:
        return _class_cache[key]

    def fail(cause: str) -> PluginLoadError:
        return PluginLoadError(
            kind=kind,
            component=info.id,
            distribution=info.distribution,
            version=info.version,
            target=info.target,
            cause=cause,
        )

    if info.problem:
        raise fail(info.problem)
    module_name, _, attribute = info.target.partition(":")
    try:
        module = importlib.import_module(module_name)
        cls: Any = module
        for part in attribute.split(".") if attribute else []:
            cls = getattr(cls, part)
    except Exception as error:  # any failure inside plugin code is that plugin's problem, not ours
        raise fail(f"{type(error).__name__}: {error}") from error
    problem = ensure_component_of_kind(cls, kind)
    if problem:
        raise fail(problem)
    _class_cache[key] = cls
    return cls


def build(kind: str, ref: str, /, **params: Any) -> Any:
    """An instance of component ``ref`` of ``kind`` configured with ``params``."""
    cls = load(kind, ref)
    from pydantic import ValidationError

    from cinesync.errors import CineSyncError

    try:
        return cls(**params)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(config)'}: {e['msg']}" for e in error.errors()
        )
        raise CineSyncError(f"invalid parameters for {kind} {ref!r}: {problems}") from None


@contextlib.contextmanager
def override(kind: str, component_id: str, cls: type) -> Iterator[None]:
    """Within the block, ``component_id`` of ``kind`` builds ``cls`` (for tests); restored afterwards."""
    _check_kind(kind)
    key = (kind, component_id)
    previous = _overrides.get(key)
    _overrides[key] = cls
    try:
        yield
    finally:
        if previous is None:
            _overrides.pop(key, None)
        else:
            _overrides[key] = previous


def doctor() -> list[tuple[ComponentInfo, str | None]]:
    """Import and validate every component: ``(info, problem or None)`` for each."""
    results: list[tuple[ComponentInfo, str | None]] = []
    for info in list_components():
        try:
            load(info.kind, info.qualified_id)
            results.append((info, None))
        except Exception as error:
            results.append((info, str(error)))
    return results
