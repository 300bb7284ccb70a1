"""Conformance checks for plugin authors: ``check_recommender(component)`` and a ``toy_dataset()``."""

from cinesync.testing.conformance import check_recommender, toy_dataset

__all__ = ["check_recommender", "toy_dataset"]
