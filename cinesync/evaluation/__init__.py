"""Offline evaluation: full-ranking metrics over held-out interactions."""

from cinesync.evaluation.evaluator import EvaluationResult, evaluate
from cinesync.evaluation.metrics import parse_metric

__all__ = ["EvaluationResult", "evaluate", "parse_metric"]
