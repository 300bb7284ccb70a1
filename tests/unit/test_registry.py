"""Entry-point discovery: lazy listing, built-ins, isolation of broken plugins, environment controls, ids."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from cinesync import registry
from cinesync.errors import AmbiguousComponentError, PluginLoadError, UnknownComponentError
from cinesync.interfaces import Recommender

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_TARGET = "cinesync_example.cooccurrence:CoOccurrence"


@dataclass(frozen=True)
class StubDistribution:
    """The two attributes of ``importlib.metadata.Distribution`` the registry reads."""

    name: str
    version: str


@pytest.fixture
def fake_entry_points(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Add fabricated recommender entry points ``(name, value, distribution)`` to the installed ones."""
    real = metadata.entry_points

    def install(*entries: tuple[str, str, str]) -> None:
        fabricated = [
            metadata.EntryPoint(name, value, registry.GROUPS["recommender"])._for(  # type: ignore[attr-defined]
                StubDistribution(dist, "9.9")
            )
            for name, value, dist in entries
        ]

        def entry_points(*, group: str) -> list[metadata.EntryPoint]:
            extra = fabricated if group == registry.GROUPS["recommender"] else []
            return [*real(group=group), *extra]

        monkeypatch.setattr(registry.metadata, "entry_points", entry_points)

    return install


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("CINESYNC_DISABLE_PLUGIN_AUTOLOAD", "CINESYNC_LOAD_PLUGINS", "CINESYNC_BLOCK"):
        monkeypatch.delenv(name, raising=False)
    yield


def _ids(kind: str | None = "recommender") -> set[str]:
    return {c.id for c in registry.list_components(kind)}


def test_listing_imports_no_plugin_code_and_no_torch() -> None:
    script = textwrap.dedent(
        """
        import sys
        from cinesync.registry import list_components
        ids = {c.id for c in list_components()}
        assert {"popularity", "acme.cooccurrence", "acme.broken"} <= ids, ids
        loaded = [
            m for m in sys.modules
            if m.startswith(("cinesync_plugins", "cinesync_example", "torch.")) or m == "torch"
        ]
        assert not loaded, loaded
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT)


def test_every_builtin_entry_point_is_listed_with_distribution_cinesync() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {
        (kind, name)
        for kind, group in registry.GROUPS.items()
        for name in project.get("entry-points", {}).get(group, {})
    }
    listed = {(c.kind, c.id) for c in registry.list_components() if c.distribution == "cinesync"}
    assert declared
    assert declared <= listed


def test_builtin_popularity_builds() -> None:
    model = registry.build("recommender", "popularity")
    assert isinstance(model, Recommender)


def test_broken_plugin_raises_plugin_load_error_naming_its_origin() -> None:
    with pytest.raises(PluginLoadError) as caught:
        registry.build("recommender", "acme.broken")
    error = caught.value
    assert error.kind == "recommender"
    assert error.component == "acme.broken"
    assert error.distribution == "cinesync-example-plugin"
    assert error.version == "0.1.0"
    assert error.target == "cinesync_example.broken:Broken"
    assert "cinesync_example_missing_dependency" in error.cause
    assert "cinesync-example-plugin" in str(error)


def test_other_components_build_after_a_plugin_fails_to_load() -> None:
    with pytest.raises(PluginLoadError):
        registry.build("recommender", "acme.broken")
    assert isinstance(registry.build("recommender", "acme.cooccurrence"), Recommender)
    assert registry.load("metric", "ndcg") is not None


def test_disable_autoload_hides_third_party_components_but_keeps_builtins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CINESYNC_DISABLE_PLUGIN_AUTOLOAD", "1")
    ids = _ids()
    assert not {i for i in ids if i.startswith("acme.")}
    assert "popularity" in ids


def test_load_plugins_keeps_only_the_named_distributions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CINESYNC_LOAD_PLUGINS", "some-other-dist")
    ids = _ids()
    assert not {i for i in ids if i.startswith("acme.")}
    assert "popularity" in ids


def test_block_hides_just_the_named_component(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CINESYNC_BLOCK", "acme.broken")
    ids = _ids()
    assert "acme.broken" not in ids
    assert {"acme.cooccurrence", "popularity"} <= ids


def test_unnamespaced_third_party_id_is_refused(fake_entry_points: Callable[..., None]) -> None:
    fake_entry_points(("knn", EXAMPLE_TARGET, "rogue-plugin"))
    (info,) = [c for c in registry.list_components("recommender") if c.id == "knn"]
    assert info.problem is not None and "namespaced" in info.problem
    with pytest.raises(PluginLoadError, match="must be namespaced") as caught:
        registry.build("recommender", "knn")
    assert caught.value.distribution == "rogue-plugin"


def test_two_distributions_claiming_one_id_is_an_error_naming_both(
    fake_entry_points: Callable[..., None],
) -> None:
    fake_entry_points(("acme.knn", EXAMPLE_TARGET, "acme-one"), ("acme.knn", EXAMPLE_TARGET, "acme-two"))
    with pytest.raises(AmbiguousComponentError, match="acme-one") as caught:
        registry.build("recommender", "acme.knn")
    assert "acme-two" in str(caught.value)
    assert "'acme-one:acme.knn'" in str(caught.value)


def test_qualified_id_resolves_an_ambiguous_id(fake_entry_points: Callable[..., None]) -> None:
    fake_entry_points(("acme.knn", EXAMPLE_TARGET, "acme-one"), ("acme.knn", EXAMPLE_TARGET, "acme-two"))
    info = registry.resolve("recommender", "acme-two:acme.knn")
    assert (info.distribution, info.id) == ("acme-two", "acme.knn")
    assert isinstance(registry.build("recommender", "acme-two:acme.knn"), Recommender)


class StandIn(Recommender):
    """A recommender that learns nothing, swapped in by ``override``."""

    def _fit(self, dataset: Any, *, validation: Any, trainer: Any) -> None:
        return None

    def score(self, users: Any, items: Any = None, context: Any = None) -> Any:
        raise NotImplementedError

    def state_tensors(self) -> dict[str, Any]:
        return {}

    def load_state_tensors(self, tensors: dict[str, Any]) -> None:
        return None


def test_override_swaps_the_class_only_within_the_block() -> None:
    with registry.override("recommender", "acme.cooccurrence", StandIn):
        assert type(registry.build("recommender", "acme.cooccurrence")) is StandIn
    assert type(registry.build("recommender", "acme.cooccurrence")).__name__ == "CoOccurrence"


def test_unknown_id_lists_installed_ids_and_suggests_close_matches() -> None:
    with pytest.raises(UnknownComponentError) as caught:
        registry.build("recommender", "acme.coocurrence")
    message = str(caught.value)
    assert "Did you mean acme.cooccurrence?" in message
    assert "Installed recommenders:" in message
    assert "popularity" in message
