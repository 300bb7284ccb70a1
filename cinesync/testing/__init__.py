"""For plugin authors: the conformance kit ``check_recommender(component)``, a ``toy_dataset()``, and
``FixedScores``, a recommender with hand-set scores for testing metrics."""

from cinesync.testing.conformance import check_recommender, toy_dataset
from cinesync.testing.fixed_scores import FixedScores

__all__ = ["FixedScores", "check_recommender", "toy_dataset"]
