"""The documentation stays true: CONTRIBUTING.md shows the example plugin's real files and documents every
hook, and the README's Python examples run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from cinesync.hooks import HookSpecs

ROOT = Path(__file__).resolve().parents[2]
CONTRIBUTING = ROOT / "CONTRIBUTING.md"
README = ROOT / "README.md"
EXAMPLE_PLUGIN = ROOT / "tests" / "fixtures" / "cinesync-example-plugin"
_FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
#: First line of a block that shows a whole file of the example plugin: ``# <path under the plugin root>``.
_FILE_HEADER = re.compile(r"# ([\w./-]+\.(?:py|toml))\n")


def _blocks(path: Path, language: str) -> list[str]:
    return [body for lang, body in _FENCE.findall(path.read_text(encoding="utf-8")) if lang == language]


def _file_blocks() -> list[tuple[str, str]]:
    """``(path, content)`` of every python or toml block of CONTRIBUTING.md that shows a plugin file."""
    found = []
    for body in _blocks(CONTRIBUTING, "python") + _blocks(CONTRIBUTING, "toml"):
        header = _FILE_HEADER.match(body)
        if header:
            found.append((header.group(1), body[header.end() :]))
    return found


def test_every_python_block_of_contributing_is_a_file_of_the_example_plugin() -> None:
    blocks = _blocks(CONTRIBUTING, "python")
    assert blocks
    assert [b.splitlines()[0] for b in blocks if not _FILE_HEADER.match(b)] == []


@pytest.mark.parametrize(("path", "content"), _file_blocks(), ids=[path for path, _ in _file_blocks()])
def test_contributing_shows_the_example_plugin_file_verbatim(path: str, content: str) -> None:
    assert content == (EXAMPLE_PLUGIN / path).read_text(encoding="utf-8")


def test_contributing_shows_the_whole_recommender_module() -> None:
    assert "src/cinesync_example/cooccurrence.py" in dict(_file_blocks())


def test_readme_python_examples_run(tmp_path: Path) -> None:
    if not README.exists():
        pytest.skip("README.md does not exist yet")
    blocks = _blocks(README, "python")
    if not blocks:
        pytest.skip("README.md has no python block")
    script = tmp_path / "readme_examples.py"
    script.write_text("\n\n".join(blocks), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.parametrize("hook", sorted(name for name in vars(HookSpecs) if name.startswith("cinesync_")))
def test_every_hook_has_a_section_in_contributing(hook: str) -> None:
    prose = _FENCE.sub("", CONTRIBUTING.read_text(encoding="utf-8"))
    headings = re.findall(r"^#+ .*$", prose, re.MULTILINE)
    assert any(re.search(rf"\b{hook}\b", heading) for heading in headings), f"no heading documents {hook}"
