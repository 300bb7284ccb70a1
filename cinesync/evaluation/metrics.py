"""Metric specs as written in manifests and on the command line: ``id`` or ``id@k``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from cinesync.errors import CineSyncError
from cinesync.interfaces import Metric

_CUTOFF = re.compile(r"[0-9]+")


def metric_params(spec: Any) -> tuple[str, dict[str, Any]]:
    """``(id, params)`` of a metric given as a mapping or a pydantic model with an ``id`` and parameters."""
    fields = dict(spec.model_dump(exclude_none=True) if hasattr(spec, "model_dump") else spec)
    metric_id = fields.pop("id", None)
    if not isinstance(metric_id, str) or not metric_id:
        raise CineSyncError(
            f"bad metric {spec!r}: a metric table needs an 'id', such as {{ id = 'ild', k = 10 }}"
        )
    return metric_id, fields


def metric_label(spec: Any) -> str:
    """How a metric spec reads in messages: ``ndcg@10`` or ``ild@10 (features=genres)``."""
    if isinstance(spec, str):
        return spec
    metric_id, params = metric_params(spec)
    k = params.pop("k", None)
    extra = ", ".join(f"{key}={value}" for key, value in params.items())
    return f"{metric_id}{f'@{k}' if k else ''}{f' ({extra})' if extra else ''}"


def parse_metric(spec: str | Mapping[str, Any] | Any) -> Metric:
    """Build the metric that ``spec`` names: ``"ndcg@10"`` is NDCG at k=10, ``"mrr"`` MRR with its default k,
    and a mapping ``{"id": "ild", "k": 10, "features": "genres"}`` passes its other fields as parameters.

    The id is resolved through :func:`cinesync.registry.build`, so an unknown id raises
    :class:`~cinesync.errors.UnknownComponentError`; a malformed spec (``"ndcg@x"``, ``"ndcg@0"``, ``"@5"``)
    raises :class:`~cinesync.errors.CineSyncError`.
    """
    from cinesync.registry import build

    if not isinstance(spec, str):
        metric_id, params = metric_params(spec)
        built = build("metric", metric_id, **params)
        assert isinstance(built, Metric)
        return built
    metric_id, at, cutoff = spec.strip().partition("@")
    metric_id, cutoff = metric_id.strip(), cutoff.strip()
    if not metric_id or (at and not (_CUTOFF.fullmatch(cutoff) and int(cutoff) > 0)):
        raise CineSyncError(
            f"bad metric {spec!r}: write a metric as 'id' or 'id@k' with k a positive integer, "
            "such as 'ndcg@10' or 'mrr'"
        )
    params = {"k": int(cutoff)} if at else {}
    metric = build("metric", metric_id, **params)
    assert isinstance(metric, Metric)
    return metric
