"""Significance tests, bootstrap intervals and multiple-comparison corrections."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from cinesync.errors import CineSyncError
from cinesync.evaluation.statistics import (
    adjust_p_values,
    bootstrap_ci,
    bootstrap_difference_ci,
    compare_runs,
    paired_t_test,
    significance_table,
    wilcoxon_test,
)

A = np.array([0.31, 0.12, 0.55, 0.40, 0.08, 0.61, 0.27, 0.35, 0.50, 0.22])
B = np.array([0.25, 0.10, 0.41, 0.42, 0.02, 0.50, 0.20, 0.30, 0.44, 0.21])


def test_paired_t_test_matches_scipy() -> None:
    assert paired_t_test(A, B) == pytest.approx(stats.ttest_rel(A, B).pvalue)


def test_wilcoxon_matches_scipy() -> None:
    assert wilcoxon_test(A, B) == pytest.approx(stats.wilcoxon(A, B).pvalue)


def test_identical_samples_give_p_one() -> None:
    assert paired_t_test(A, A) == 1.0
    assert wilcoxon_test(A, A) == 1.0


def test_users_with_nan_are_left_out_of_paired_tests() -> None:
    a, b = np.append(A, np.nan), np.append(B, 0.3)
    assert paired_t_test(a, b) == pytest.approx(stats.ttest_rel(A, B).pvalue)


def test_bootstrap_interval_contains_the_true_mean_of_a_large_sample() -> None:
    sample = np.random.default_rng(1).normal(0.3, 0.1, size=5000)
    low, high = bootstrap_ci(sample, resamples=500)
    assert low < 0.3 < high
    assert high - low < 0.01


def test_bootstrap_is_reproducible_with_a_seed() -> None:
    assert bootstrap_ci(A, seed=3) == bootstrap_ci(A, seed=3)


def test_bootstrap_difference_is_the_interval_of_paired_differences() -> None:
    assert bootstrap_difference_ci(A, B, seed=2) == bootstrap_ci(A - B, seed=2)


def test_holm_matches_a_hand_computed_example() -> None:
    # sorted 0.01, 0.02, 0.03, 0.04 times 4, 3, 2, 1 -> 0.04, 0.06, 0.06 (monotone), 0.06
    adjusted = adjust_p_values([0.04, 0.01, 0.03, 0.02], "holm")
    np.testing.assert_allclose(adjusted, [0.06, 0.04, 0.06, 0.06])


def test_benjamini_hochberg_matches_a_hand_computed_example() -> None:
    # sorted 0.01, 0.02, 0.03, 0.5 times 4/1, 4/2, 4/3, 4/4 -> 0.04, 0.04, 0.04, 0.5
    adjusted = adjust_p_values([0.5, 0.01, 0.03, 0.02], "bh")
    np.testing.assert_allclose(adjusted, [0.5, 0.04, 0.04, 0.04])


def test_corrections_cap_at_one() -> None:
    assert adjust_p_values([0.6, 0.9], "bonferroni").tolist() == [1.0, 1.0]


def test_compare_runs_aligns_users_and_refuses_different_users() -> None:
    users = np.arange(10)
    shuffled = np.random.default_rng(0).permutation(10)
    aligned = compare_runs({"m": A}, {"m": B}, "m")
    reordered = compare_runs({"m": A}, {"m": B[shuffled]}, "m", users_a=users, users_b=users[shuffled])
    assert reordered.p_values == pytest.approx(aligned.p_values)
    with pytest.raises(CineSyncError, match="different users"):
        compare_runs({"m": A}, {"m": B}, "m", users_a=users, users_b=users + 1)


def test_significance_table_defaults_to_the_best_model_and_corrects_each_metric() -> None:
    rng = np.random.default_rng(0)
    strong = rng.random(400) * 0.5 + 0.3
    results = {
        "weak": {"ndcg": strong - 0.2 + rng.normal(0, 0.01, 400)},
        "strong": {"ndcg": strong},
        "tied": {"ndcg": strong + rng.normal(0, 0.01, 400)},
    }
    table = significance_table(results, correction="holm")
    assert {c.baseline for c in table} == {"strong"}
    by_model = {c.model: c for c in table}
    assert by_model["weak"].significant and not by_model["weak"].better
    assert by_model["weak"].adjusted["t"] >= by_model["weak"].p_values["t"]
    assert not by_model["tied"].significant
