"""docs/training.md stays true: its manifest validates and its Python example runs."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from cinesync.manifest import ModelManifest, parse_manifest
from cinesync.train.trainer import TrainerConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "training.md"
_FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks(language: str) -> list[str]:
    return [body for lang, body in _FENCE.findall(DOC.read_text(encoding="utf-8")) if lang == language]


def test_the_manifest_example_validates_with_every_training_option() -> None:
    manifest = parse_manifest(tomllib.loads(blocks("toml")[0]), str(DOC))
    assert isinstance(manifest, ModelManifest)

    settings = TrainerConfig.model_validate(manifest.training)

    documented = set(manifest.training) | {"log_dir", "progress", "device", "max_seconds", "eval_every"}
    documented |= {"warmup_steps"}  # shown as the alternative to warmup_ratio
    assert documented == set(TrainerConfig.model_fields)
    assert settings.curriculum is not None and [task.name for task in settings.tasks] == ["ranking", "rating"]


def test_the_python_example_runs(tmp_path: Path) -> None:
    script = tmp_path / "training_example.py"
    script.write_text(blocks("python")[0], encoding="utf-8")

    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, result.stderr[-4000:]
    assert len(result.stdout.splitlines()) == 3
