"""docs/metrics.md documents every registered metric (docs cannot drift from the registry)."""

from __future__ import annotations

from pathlib import Path

from cinesync.registry import list_components

METRICS_DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def test_every_builtin_metric_is_documented() -> None:
    text = METRICS_DOC.read_text(encoding="utf-8")
    builtin = [c.id for c in list_components("metric") if c.is_builtin]
    assert builtin
    undocumented = [metric for metric in builtin if f"`{metric}`" not in text]
    assert undocumented == [], f"add these metrics to docs/metrics.md: {undocumented}"
