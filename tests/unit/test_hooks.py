"""Cross-cutting hooks: plugin commands, lazy loading of hook plugins, isolation of broken ones."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from click.testing import CliRunner

from cinesync import hooks
from cinesync.cli import cli

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class StubDistribution:
    """The two attributes of ``importlib.metadata.Distribution`` the hook loader reads."""

    name: str
    version: str


@pytest.fixture(autouse=True)
def _fresh_plugin_manager() -> Iterator[None]:
    hooks.reset_plugin_manager()
    yield
    hooks.reset_plugin_manager()


def test_hook_plugin_adds_the_acme_hello_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cinesync.cli", "acme-hello"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    assert result.stdout.strip() == "Hello from the acme plugin!"


def test_plugins_list_loads_no_hook_plugin() -> None:
    result = CliRunner().invoke(cli, ["plugins", "list", "--json"])
    assert result.exit_code == 0, result.output
    assert "acme.cooccurrence" in result.output
    assert hooks._manager is None


def test_plugins_list_imports_no_plugin_module() -> None:
    script = textwrap.dedent(
        """
        import sys
        from cinesync.cli import main
        main(["plugins", "list", "--json"])
        loaded = [m for m in sys.modules if m.startswith(("cinesync_example", "cinesync_plugins"))]
        assert not loaded, loaded
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT, capture_output=True)


def test_broken_hook_plugin_warns_and_the_others_still_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = metadata.entry_points
    broken = metadata.EntryPoint("rogue", "cinesync_rogue_hooks_that_do_not_exist", hooks.HOOK_GROUP)
    broken = broken._for(StubDistribution("rogue-plugin", "1.0"))  # type: ignore[attr-defined]

    def entry_points(*, group: str) -> list[metadata.EntryPoint]:
        return [*real(group=group), *([broken] if group == hooks.HOOK_GROUP else [])]

    monkeypatch.setattr(metadata, "entry_points", entry_points)
    log = tmp_path / "hooks.jsonl"
    monkeypatch.setenv("CINESYNC_EXAMPLE_HOOK_LOG", str(log))
    with pytest.warns(UserWarning, match=r"'rogue'.*ModuleNotFoundError"):
        manager = hooks.plugin_manager()
    manager.hook.cinesync_evaluation_end(model_name="m", dataset="d", metrics={"ndcg@10": 0.5})
    assert json.loads(log.read_text(encoding="utf-8")) == {
        "model": "m",
        "dataset": "d",
        "metrics": {"ndcg@10": 0.5},
    }
