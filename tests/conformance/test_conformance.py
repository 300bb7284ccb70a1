"""Every registered recommender passes the conformance kit (timm-style: one suite over the registry)."""

from __future__ import annotations

import pytest

from cinesync.registry import list_components
from cinesync.testing import check_recommender

#: Entry points that exist to prove failure handling (tests/fixtures/cinesync-example-plugin).
DELIBERATELY_BROKEN = {"acme.broken"}

RECOMMENDERS = sorted(c.id for c in list_components("recommender") if c.id not in DELIBERATELY_BROKEN)


def test_the_builtin_recommenders_are_registered() -> None:
    assert {"popularity", "itemknn", "ease", "bpr_mf"} <= set(RECOMMENDERS)


@pytest.mark.parametrize("component", RECOMMENDERS)
def test_recommender_conforms(component: str) -> None:
    check_recommender(component)
