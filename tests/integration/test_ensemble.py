"""Ensemble manifests end to end on generated data: run, compare, calibrate, save, reload, serve, cache."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import cinesync
from cinesync.ensemble import Ensemble, EnsembleRecommendations, calibration_table, run_ensemble
from cinesync.errors import CineSyncError
from cinesync.manifest import load_manifest


def write_data(folder: Path, n_users: int = 90, n_items: int = 40, seed: int = 0) -> Path:
    """Three taste groups with a popular core, timestamps and genres, as CSV files."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(n_users):
        group = user % 3
        liked = np.arange(group, n_items, 3)
        picks = rng.choice(liked, size=min(len(liked), 6 + user % 5), replace=False)
        for position, item in enumerate(picks):
            rows.append((user, int(item), 1_000_000 + 3600 * position + user))
    pd.DataFrame(rows, columns=["user", "item", "ts"]).to_csv(folder / "ratings.csv", index=False)
    genres = ["Drama", "Comedy", "Action"]
    pd.DataFrame(
        {
            "item": range(n_items),
            "title": [f"Movie {i}" for i in range(n_items)],
            "genres": [genres[i % 3] for i in range(n_items)],
        }
    ).to_csv(folder / "items.csv", index=False)
    return folder / "ratings.csv"


def manifest_text(data: Path, fusion: str = "weighted", extra: str = "", members: str = "") -> str:
    return textwrap.dedent(
        f"""
        kind = "ensemble"
        name = "tiny"
        {extra}

        [fusion]
        component = "{fusion}"

        [[members]]
        component = "popularity"

        [[members]]
        component = "ease"
        params = {{ l2 = 10.0 }}

        [[members]]
        component = "itemknn"
        {members}

        [evaluation]
        metrics = ["ndcg@10", "hr@10"]

        [evaluation.dataset]
        name = "{data}"

        [evaluation.dataset.options]
        columns = {{ user = "user", item = "item", timestamp = "ts" }}
        items_path = "{data.parent / "items.csv"}"
        item_columns = {{ item = "item", title = "title", genres = "genres" }}

        [evaluation.split]
        method = "leave_last_out"
        validation = true
        """
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("ensemble")
    data = write_data(root)
    (root / "ensemble.toml").write_text(manifest_text(data), encoding="utf-8")
    manifest = load_manifest(root / "ensemble.toml")
    run = run_ensemble(manifest, source=str(root / "ensemble.toml"), output=root / "out", progress=False)
    return root, run


def test_run_evaluates_members_and_the_fused_row_on_the_same_users(finished: tuple[Path, object]) -> None:
    root, run = finished
    results = run.suite.results  # type: ignore[attr-defined]
    assert list(results) == ["popularity", "ease", "itemknn", "ensemble"]
    users = results["ensemble"].users
    assert all(np.array_equal(r.users, users) for r in results.values())
    assert run.comparison["best_member"] in {"popularity", "ease", "itemknn"}  # type: ignore[attr-defined]
    assert 0.0 <= run.comparison["t_test_p"] <= 1.0  # type: ignore[attr-defined]
    written = json.loads((root / "out" / "results.json").read_text())
    assert "ensemble" in written["results"]
    report = (root / "out" / "report.md").read_text()
    assert "## Ensemble" in report and "Reliability" in report
    assert "Reliability diagram" in (root / "out" / "report.html").read_text()


def test_the_fusion_only_saw_validation_data(finished: tuple[Path, object]) -> None:
    _, run = finished
    # the weighted fusion tuned on validation: its validation NDCG is recorded and at least the equal-weight start
    assert "ensemble_ndcg@10" in run.validation  # type: ignore[attr-defined]
    assert run.ensemble.fusion.validation_ndcg == pytest.approx(run.validation["ensemble_ndcg@10"])  # type: ignore[attr-defined]


def test_recommend_returns_confidences_members_and_filters_by_confidence(
    finished: tuple[Path, object],
) -> None:
    _, run = finished
    ensemble: Ensemble = run.ensemble  # type: ignore[attr-defined]
    result = ensemble.recommend([0, 1], k=5)
    assert isinstance(result, EnsembleRecommendations)
    assert [len(items) for items in result.items] == [5, 5]
    confidences = np.array(result.confidences)
    assert ((confidences >= 0) & (confidences <= 1)).all()
    for members in result.members[0]:
        assert set(members) <= set(ensemble.members)
        assert all(m["weight"] > 0 and (m["rank"] is None or 1 <= m["rank"] <= 20) for m in members.values())
    assert any(m["rank"] is not None for members in result.members[0] for m in members.values())
    threshold = float(np.median(confidences))
    filtered = ensemble.recommend([0, 1], k=5, min_confidence=threshold)
    assert all(c >= threshold for row in filtered.confidences for c in row)
    assert sum(map(len, filtered.items)) < 10
    candidates = ensemble.recommend([0], k=3, candidates=[1, 4, 7, 10, 13])
    assert set(candidates.items[0]) <= {1, 4, 7, 10, 13}
    with pytest.raises(CineSyncError, match="min_confidence"):
        ensemble.recommend([0], k=3, min_confidence=1.5)
    with pytest.raises(CineSyncError, match="sessions"):
        ensemble.recommend(sessions=[[1, 2]], k=3)


def test_artifact_reloads_in_a_new_process_with_identical_recommendations(
    finished: tuple[Path, object],
) -> None:
    root, run = finished
    artifact = root / "out" / "artifacts" / "tiny"
    here = run.ensemble.recommend([0, 5, 17], k=10)  # type: ignore[attr-defined]
    code = (
        f"import json, cinesync; m = cinesync.load({str(artifact)!r}); r = m.recommend([0, 5, 17], k=10); "
        "print(json.dumps([r.items, r.scores, r.confidences]))"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    items, scores, confidences = json.loads(output.strip().splitlines()[-1])
    assert items == here.items
    assert np.allclose(scores, here.scores, atol=1e-5) and np.allclose(
        confidences, here.confidences, atol=1e-6
    )
    loaded = cinesync.load(str(artifact))
    assert isinstance(loaded, Ensemble) and list(loaded.members) == list(run.ensemble.members)  # type: ignore[attr-defined]


def test_cli_recommend_shows_confidence_and_members(finished: tuple[Path, object]) -> None:
    from click.testing import CliRunner

    from cinesync.cli import cli

    root, _ = finished
    result = CliRunner().invoke(
        cli, ["recommend", str(root / "out" / "artifacts" / "tiny"), "--user", "3", "-k", "3", "--json"]
    )
    assert result.exit_code == 0, result.output
    records = json.loads(result.output)
    assert len(records) == 3 and {"confidence", "members", "title"} <= set(records[0])


def test_a_failing_member_is_skipped_with_a_warning_or_stops_the_run(tmp_path: Path) -> None:
    data = write_data(tmp_path)
    failing = '\n[[members]]\ncomponent = "bias_baseline"\n'  # needs ratings, which this data lacks
    (tmp_path / "skip.toml").write_text(manifest_text(data, extra='on_member_failure = "skip"') + failing)
    with pytest.warns(RuntimeWarning, match="bias_baseline"):
        run = run_ensemble(load_manifest(tmp_path / "skip.toml"), progress=False)
    assert run.skipped == ["bias_baseline"] and "bias_baseline" not in run.suite.results
    (tmp_path / "fail.toml").write_text(manifest_text(data) + failing)
    with pytest.raises(CineSyncError, match="bias_baseline"):
        run_ensemble(load_manifest(tmp_path / "fail.toml"), progress=False)


def test_a_member_failing_at_serving_time_follows_the_policy(finished: tuple[Path, object]) -> None:
    _, run = finished
    ensemble: Ensemble = run.ensemble  # type: ignore[attr-defined]
    broken = ensemble.members["itemknn"]
    original = broken.score
    broken.score = lambda *a, **k: torch.full((len(a[0]), ensemble.n_items), float("nan"))  # type: ignore[method-assign]
    try:
        with pytest.raises(CineSyncError, match="itemknn"):
            ensemble.recommend([0], k=3)
        ensemble.config = ensemble.config.model_copy(update={"on_member_failure": "skip"})
        with pytest.warns(RuntimeWarning, match="itemknn"):
            result = ensemble.recommend([0], k=3)
        assert len(result.items[0]) == 3 and all("itemknn" not in m for m in result.members[0])
    finally:
        broken.score = original  # type: ignore[method-assign]
        ensemble.config = ensemble.config.model_copy(update={"on_member_failure": "fail"})


def test_greedy_selection_and_the_member_cache(tmp_path: Path) -> None:
    data = write_data(tmp_path)
    text = manifest_text(data, extra='[selection]\nmethod = "greedy"\nrounds = 4\n')
    (tmp_path / "greedy.toml").write_text(text)
    manifest = load_manifest(tmp_path / "greedy.toml")
    first = run_ensemble(manifest, progress=False, cache=tmp_path / "cache")
    assert sum(first.selection.values()) >= 1
    assert set(first.ensemble.members) == {n for n, c in first.selection.items() if c > 0}
    assert set(first.suite.results) == {
        "popularity",
        "ease",
        "itemknn",
        "ensemble",
    }  # dropped ones are tested
    assert len(list((tmp_path / "cache").iterdir())) == 3
    again = run_ensemble(manifest, progress=False, cache=tmp_path / "cache")
    assert again.suite.results["ensemble"].metrics == first.suite.results["ensemble"].metrics


def test_calibration_table_detects_monotonic_precision() -> None:
    confidence = np.linspace(0, 1, 1000)
    hits = (np.random.default_rng(0).random(1000) < confidence).astype(float)
    table = calibration_table(confidence, hits)
    assert table["monotonic"] and len(table["reliability"]) == 10
    assert table["expected_calibration_error"] < 0.1
    assert not calibration_table(confidence, 1 - hits)["monotonic"]
