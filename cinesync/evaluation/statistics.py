"""Confidence intervals and significance tests over per-user metric values.

Two models evaluated on the same users give *paired* samples: user u's NDCG@10 under model A and under model B.
The tests here use that pairing:

* :func:`paired_t_test`: Student's paired t-test on the differences (``scipy.stats.ttest_rel``), two-sided.
* :func:`wilcoxon_test`: Wilcoxon signed-rank test (``scipy.stats.wilcoxon``), two-sided, zero differences
  dropped (Wilcoxon's original treatment; ranking metrics give many users 0 under both models).
* :func:`bootstrap_ci`: percentile bootstrap interval of a mean (Efron & Tibshirani, *An Introduction to the
  Bootstrap*, 1993, ch. 13); for a paired difference it is the interval of the mean of ``a - b``.
* :func:`adjust_p_values`: Holm's step-down (Holm 1979, family-wise error) and Benjamini–Hochberg's step-up
  (1995, false discovery rate) corrections, and Bonferroni.

:func:`compare_runs` compares two aligned sets of per-user vectors on one metric; :func:`significance_table`
compares every model with a baseline and corrects the p-values of each metric's family of comparisons.
Following Sakai (SIGIR 2016) and Urbano et al. (SIGIR 2019) on IR evaluation, the t-test is the primary test
and the Wilcoxon test a robustness check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from cinesync.errors import CineSyncError

Test = Literal["t", "wilcoxon"]
Correction = Literal["holm", "bh", "bonferroni", "none"]
TESTS: tuple[Test, ...] = ("t", "wilcoxon")
#: At most this many resampled values are held in memory at once (about 32 MB of float64).
_BOOTSTRAP_CHUNK = 4_000_000


def _as_vector(values: Any, name: str) -> np.ndarray:
    """``values`` as a float64 vector; NaN (a user the metric could not judge) is kept, infinity refused."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise CineSyncError(
            f"{name} must be a non-empty 1-D array of per-user values, got shape {array.shape}"
        )
    if np.isinf(array).any():
        raise CineSyncError(f"{name} holds infinite values; per-user metric values must be finite or NaN")
    return array


def _judged(values: np.ndarray, name: str) -> np.ndarray:
    kept = values[~np.isnan(values)]
    if kept.size == 0:
        raise CineSyncError(f"{name} has no judged user (every value is NaN)")
    return kept


def _paired(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    """The users judged in both samples (NaN in either drops the pair), aligned."""
    first, second = _as_vector(a, "a"), _as_vector(b, "b")
    if first.shape != second.shape:
        raise CineSyncError(
            f"paired samples differ in length ({first.size} vs {second.size} users): "
            "compare runs evaluated on the same users"
        )
    both = ~(np.isnan(first) | np.isnan(second))
    if not both.any():
        raise CineSyncError("no user is judged in both samples (every pair has a NaN)")
    return first[both], second[both]


def paired_t_test(a: Any, b: Any) -> float:
    """Two-sided p-value of the paired t-test of ``mean(a - b) == 0`` (``scipy.stats.ttest_rel``), over the
    users judged in both samples (NaN in either drops the pair; so for every test here).

    When every difference is equal the statistic is undefined: the p-value is 1.0 when they are all zero
    (no evidence of a difference) and 0.0 otherwise (a constant non-zero shift)."""
    from scipy import stats

    first, second = _paired(a, b)
    differences = first - second
    if np.ptp(differences) == 0:
        return 1.0 if differences[0] == 0 else 0.0
    return float(stats.ttest_rel(first, second).pvalue)


def wilcoxon_test(a: Any, b: Any) -> float:
    """Two-sided p-value of the Wilcoxon signed-rank test on ``a - b`` (``scipy.stats.wilcoxon``).

    Zero differences are dropped (``zero_method="wilcox"``); with no non-zero difference the p-value is 1.0.
    scipy picks the exact distribution for small samples without ties and the normal approximation otherwise.
    """
    from scipy import stats

    first, second = _paired(a, b)
    if not np.any(first != second):
        return 1.0
    return float(stats.wilcoxon(first, second, zero_method="wilcox").pvalue)


def bootstrap_ci(
    values: Any, *, confidence: float = 0.95, resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval ``(low, high)`` of the mean of ``values``.

    ``resamples`` samples of ``len(values)`` users are drawn with replacement from a generator seeded with
    ``seed`` (same inputs, same interval); the interval holds the central ``confidence`` share of their means.
    NaN values (users a metric could not judge) are left out. Resampling is vectorised in chunks, so memory
    stays bounded for large user counts.
    """
    sample = _judged(_as_vector(values, "values"), "values")
    if not 0 < confidence < 1:
        raise CineSyncError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    if resamples < 1:
        raise CineSyncError(f"resamples must be at least 1, got {resamples}")
    rng = np.random.default_rng(seed)
    n = sample.size
    rows = max(1, _BOOTSTRAP_CHUNK // n)
    means = np.empty(resamples)
    for start in range(0, resamples, rows):
        stop = min(start + rows, resamples)
        means[start:stop] = sample[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def bootstrap_difference_ci(
    a: Any, b: Any, *, confidence: float = 0.95, resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(a - b)`` for paired samples (users resampled together)."""
    first, second = _paired(a, b)
    return bootstrap_ci(first - second, confidence=confidence, resamples=resamples, seed=seed)


def adjust_p_values(p_values: Sequence[float] | np.ndarray, method: Correction = "holm") -> np.ndarray:
    """Multiple-comparison adjusted p-values, in the input order, capped at 1.

    * ``"holm"``: Holm's step-down; controls the family-wise error rate.
    * ``"bh"``: Benjamini–Hochberg step-up; controls the false discovery rate (independent or positively
      dependent tests).
    * ``"bonferroni"``: each p-value times the family size.
    * ``"none"``: unchanged.

    A hypothesis is rejected at level alpha when its adjusted p-value is at most alpha.
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    if m == 0 or method == "none":
        return p.copy()
    if np.any((p < 0) | (p > 1)):
        raise CineSyncError("p-values must lie in [0, 1]")
    if method == "bonferroni":
        return np.minimum(p * m, 1.0)
    order = np.argsort(p, kind="stable")
    ranked = p[order]
    if method == "holm":
        adjusted = np.maximum.accumulate(ranked * (m - np.arange(m)))
    elif method == "bh":
        adjusted = np.minimum.accumulate((ranked * m / np.arange(1, m + 1))[::-1])[::-1]
    else:
        raise CineSyncError(f"unknown correction {method!r}; use one of holm, bh, bonferroni, none")
    result = np.empty(m)
    result[order] = np.minimum(adjusted, 1.0)
    return result


@dataclass
class Comparison:
    """One model compared with another on one metric over the same users.

    ``difference`` is ``mean(model) - mean(baseline)`` with its bootstrap interval ``difference_ci``;
    ``p_values`` holds each test's raw two-sided p-value and ``adjusted`` the corrected ones (equal to the raw
    ones until a correction is applied). ``significant`` says whether the first test's adjusted p-value is
    below ``alpha``; ``better`` whether the difference points the metric's good way.
    """

    metric: str
    model: str
    baseline: str
    n_users: int
    mean: float
    baseline_mean: float
    difference: float
    difference_ci: tuple[float, float]
    p_values: dict[str, float]
    adjusted: dict[str, float] = field(default_factory=dict)
    significant: bool = False
    better: bool = False

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["difference_ci"] = list(self.difference_ci)
        return record


def compare_runs(
    per_user_a: Mapping[str, Any],
    per_user_b: Mapping[str, Any],
    metric: str,
    *,
    users_a: Any = None,
    users_b: Any = None,
    names: tuple[str, str] = ("a", "b"),
    tests: Sequence[Test] = TESTS,
    alpha: float = 0.05,
    higher_is_better: bool = True,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Comparison:
    """Compare ``per_user_a[metric]`` (the model, named ``names[0]``) with ``per_user_b[metric]`` (the
    baseline, ``names[1]``) with paired tests and a bootstrap interval of the difference.

    With ``users_a`` / ``users_b`` (user indices of the vectors) the values are aligned by user, and both runs
    must have evaluated the same users; without them the vectors are taken as aligned already. Users a metric
    could not judge (NaN) in either run are left out of every statistic. The p-values are uncorrected
    (``significant`` uses them); :func:`significance_table` corrects families.
    """
    for name, values in zip(names, (per_user_a, per_user_b), strict=True):
        if metric not in values:
            shown = ", ".join(sorted(values)) or "none"
            raise CineSyncError(f"{name!r} has no per-user values of {metric} (it has {shown})")
    a = _as_vector(per_user_a[metric], f"{names[0]} {metric}")
    b = _as_vector(per_user_b[metric], f"{names[1]} {metric}")
    if users_a is not None or users_b is not None:
        a, b = _align(a, b, users_a, users_b, names)
    unknown = [t for t in tests if t not in TESTS]
    if unknown or not tests:
        raise CineSyncError(f"unknown test(s) {unknown or tests}; use 't' and/or 'wilcoxon'")
    runners = {"t": paired_t_test, "wilcoxon": wilcoxon_test}
    p_values: dict[str, float] = {test: runners[test](a, b) for test in tests}
    a, b = _paired(a, b)
    difference = float(a.mean() - b.mean())
    return Comparison(
        metric=metric,
        model=names[0],
        baseline=names[1],
        n_users=int(a.size),
        mean=float(a.mean()),
        baseline_mean=float(b.mean()),
        difference=difference,
        difference_ci=bootstrap_difference_ci(a, b, confidence=confidence, resamples=resamples, seed=seed),
        p_values=p_values,
        adjusted=dict(p_values),
        significant=p_values[tests[0]] < alpha,
        better=difference > 0 if higher_is_better else difference < 0,
    )


def _align(
    a: np.ndarray, b: np.ndarray, users_a: Any, users_b: Any, names: tuple[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    if users_a is None or users_b is None:
        raise CineSyncError("give the user indices of both runs (users_a and users_b), or of neither")
    first, second = np.asarray(users_a), np.asarray(users_b)
    if first.shape != a.shape or second.shape != b.shape:
        raise CineSyncError("user indices and per-user values differ in length")
    if first.size != second.size or not np.array_equal(np.sort(first), np.sort(second)):
        only_a = np.setdiff1d(first, second).size
        only_b = np.setdiff1d(second, first).size
        raise CineSyncError(
            f"{names[0]!r} and {names[1]!r} evaluated different users ({only_a} only in the first, {only_b} only "
            "in the second): paired tests need the same test users, so run both under the same protocol"
        )
    return a[np.argsort(first, kind="stable")], b[np.argsort(second, kind="stable")]


def significance_table(
    results: Mapping[str, Mapping[str, Any]],
    *,
    baseline: str | None = None,
    metrics: Sequence[str] | None = None,
    tests: Sequence[Test] = TESTS,
    correction: Correction = "holm",
    alpha: float = 0.05,
    higher_is_better: Mapping[str, bool] | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> list[Comparison]:
    """Compare every model of ``results`` (model -> metric -> per-user values, aligned over the same users)
    with ``baseline`` on each of ``metrics`` (default: every metric the models share).

    The baseline defaults to the best model on the first metric (by ``higher_is_better``, default True). For
    each metric and test, the p-values of the comparisons with the baseline form one family and are adjusted
    with ``correction``; a comparison is ``significant`` when the first test's adjusted p-value is below
    ``alpha``. Returns the comparisons ordered by metric, then model as in ``results``.
    """
    if len(results) < 2:
        raise CineSyncError("significance tests need at least two models")
    shared = [m for m in next(iter(results.values())) if all(m in values for values in results.values())]
    chosen = list(metrics) if metrics is not None else shared
    missing = [m for m in chosen if m not in shared]
    if missing or not chosen:
        raise CineSyncError(
            f"metric(s) {', '.join(missing) or '(none)'} lack per-user values for some model; "
            f"every model has {', '.join(shared) or 'none'}"
        )
    direction = dict(higher_is_better or {})
    if baseline is None:
        first = chosen[0]
        sign = 1.0 if direction.get(first, True) else -1.0
        baseline = max(results, key=lambda name: sign * float(np.nanmean(results[name][first])))
    if baseline not in results:
        raise CineSyncError(f"baseline {baseline!r} is not one of the models ({', '.join(results)})")
    comparisons: list[Comparison] = []
    for metric in chosen:
        family = [
            compare_runs(
                results[name],
                results[baseline],
                metric,
                names=(name, baseline),
                tests=tests,
                alpha=alpha,
                higher_is_better=direction.get(metric, True),
                resamples=resamples,
                seed=seed,
            )
            for name in results
            if name != baseline
        ]
        for test in tests:
            adjusted = adjust_p_values([c.p_values[test] for c in family], correction)
            for comparison, value in zip(family, adjusted, strict=True):
                comparison.adjusted[test] = float(value)
        for comparison in family:
            comparison.significant = comparison.adjusted[tests[0]] < alpha
        comparisons.extend(family)
    return comparisons
