"""For plugin authors: the conformance kit ``check_recommender(component)``; small datasets
(``toy_dataset()``, ``random_dataset()``) with the dense ``training_matrix()`` reference; and ``FixedScores``, a
recommender with hand-set scores for testing metrics."""

from cinesync.testing.conformance import check_recommender, random_dataset, toy_dataset, training_matrix
from cinesync.testing.fixed_scores import FixedScores

__all__ = ["FixedScores", "check_recommender", "random_dataset", "toy_dataset", "training_matrix"]
