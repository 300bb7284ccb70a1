"""Metric specs as written in manifests and on the command line: ``id`` or ``id@k``."""

from __future__ import annotations

import re

from cinesync.errors import CineSyncError
from cinesync.interfaces import Metric

_CUTOFF = re.compile(r"[0-9]+")


def parse_metric(spec: str) -> Metric:
    """Build the metric that ``spec`` names: ``"ndcg@10"`` is NDCG at k=10, ``"mrr"`` MRR with its default k.

    The id is resolved through :func:`cinesync.registry.build`, so an unknown id raises
    :class:`~cinesync.errors.UnknownComponentError`; a malformed spec (``"ndcg@x"``, ``"ndcg@0"``, ``"@5"``)
    raises :class:`~cinesync.errors.CineSyncError`.
    """
    from cinesync.registry import build

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
