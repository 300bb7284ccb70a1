"""Run directories, reports and the `report` / `compare` commands, on small generated runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cinesync.evaluation.report import build_report, render_html, render_markdown, write_report
from cinesync.suite import ModelResult, SuiteResult, load_run, run_suite, save_run

ROOT = Path(__file__).resolve().parents[2]
N_USERS, N_ITEMS, K = 300, 50, 5


def synthetic_suite(shift: float = 0.0, seed: int = 0) -> SuiteResult:
    """Three models over the same 300 users: 'good' clearly beats 'popular', 'close' is a near tie."""
    rng = np.random.default_rng(seed)
    users = np.arange(N_USERS, dtype=np.int64)
    base = rng.random(N_USERS) * 0.3
    per_model = {
        "popular": base,
        "good": base + 0.1 + shift + rng.normal(0, 0.02, N_USERS),
        "close": base + rng.normal(0, 0.01, N_USERS),
    }
    item_counts = np.sort(rng.integers(1, 200, N_ITEMS))[::-1].copy()
    results = {}
    for position, (name, ndcg) in enumerate(per_model.items()):
        top = (np.arange(K)[None, :] + rng.integers(0, 1 + position * 20, (N_USERS, 1))) % N_ITEMS
        hr = (ndcg > 0.2).astype(np.float64)
        results[name] = ModelResult(
            name=name,
            component=name,
            metrics={"ndcg@5": float(ndcg.mean()), "hr@5": float(hr.mean()), "coverage@5": 0.5},
            validation={},
            train_seconds=0.1,
            eval_seconds=0.1,
            n_parameters=0,
            fit_info={},
            artifact=None,
            per_user={"ndcg@5": ndcg, "hr@5": hr},
            users=users,
            top_items=top.astype(np.int32),
        )
    protocol = {
        "dataset": {"name": "synthetic"},
        "significance": {"baseline": ["popular"], "bootstrap": 200},
        "fairness": {"attributes": ["gender", "age", "activity"]},
    }
    return SuiteResult(
        name="synthetic",
        protocol=protocol,
        dataset={"users": N_USERS, "items": N_ITEMS, "interactions": int(item_counts.sum())},
        results=results,
        seconds=1.0,
        metrics={
            "ndcg@5": {"per_user": True, "higher_is_better": True},
            "hr@5": {"per_user": True, "higher_is_better": True},
            "coverage@5": {"per_user": False, "higher_is_better": True},
        },
        users=pd.DataFrame(
            {
                "user": users,
                "id": [str(u) for u in users],
                "activity": rng.integers(5, 500, N_USERS),
                "gender": rng.choice(["F", "M"], N_USERS),
                "age": rng.integers(12, 70, N_USERS),
            }
        ),
        item_counts=item_counts,
    )


def cinesync(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cinesync.cli", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("run")
    save_run(synthetic_suite(), root)
    return root


def test_saved_run_reads_back_identically(run_dir: Path) -> None:
    original, loaded = synthetic_suite(), load_run(run_dir)
    assert list(loaded.results) == list(original.results)
    for name, result in original.results.items():
        np.testing.assert_array_equal(loaded.results[name].per_user["ndcg@5"], result.per_user["ndcg@5"])
        np.testing.assert_array_equal(loaded.results[name].top_items, result.top_items)
    pd.testing.assert_frame_equal(loaded.users, original.users)


def test_results_json_keeps_its_format(run_dir: Path) -> None:
    row = json.loads((run_dir / "results.json").read_text())["results"]["good"]
    assert {"ndcg@5", "hr@5", "coverage@5", "train_seconds"} <= set(row)


def test_report_marks_the_clear_winner_and_not_the_near_tie() -> None:
    report = build_report(synthetic_suite())
    comparisons = {c["model"]: c for c in report["significance"]["popular"] if c["metric"] == "ndcg@5"}
    assert comparisons["good"]["significant"] and comparisons["good"]["better"]
    assert not comparisons["close"]["significant"]
    low, high = report["models"]["good"]["ndcg@5"]["ci"]
    assert low < report["models"]["good"]["ndcg@5"]["value"] < high
    assert report["models"]["good"]["coverage@5"]["ci"] is None  # catalogue-level: no per-user interval


def test_report_has_fairness_groups_and_item_curves() -> None:
    report = build_report(synthetic_suite())
    assert set(report["fairness"]) == {"gender", "age", "activity"}
    assert report["fairness"]["gender"]["groups"] == ["F", "M"]
    ease = report["items"]["models"]["popular"]
    assert 0 <= ease["gini"] <= 1 and ease["lorenz"]["y"][-1] == pytest.approx(1.0)


def test_markdown_and_html_show_every_section() -> None:
    report = build_report(synthetic_suite())
    markdown, page = render_markdown(report), render_html(report)
    for heading in (
        "## Results",
        "## Significance against popular",
        "## Popularity bias",
        "## Fairness by age",
    ):
        assert heading in markdown
    assert "good | 0." in markdown and "▲" in markdown
    assert page.count("<svg") >= 6 and "http://" not in page.replace("http://www.w3.org/2000/svg", "")


def test_report_command_rerenders_from_the_run_directory(run_dir: Path) -> None:
    done = cinesync("report", str(run_dir))
    assert done.returncode == 0, done.stderr
    assert (run_dir / "report.html").stat().st_size > 10_000
    assert json.loads((run_dir / "report.json").read_text())["suite"] == "synthetic"
    assert "▲" in done.stdout


def test_compare_command_tests_models_present_in_both_runs(run_dir: Path, tmp_path: Path) -> None:
    save_run(synthetic_suite(shift=0.05), tmp_path / "b")
    done = cinesync("compare", str(tmp_path / "b"), str(run_dir), "--metric", "ndcg@5", "--json")
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    assert set(rows) == {"popular", "good", "close"}
    assert rows["good"]["significant"] and rows["good"]["difference"] == pytest.approx(0.05)
    assert not rows["popular"]["significant"] and rows["popular"]["difference"] == 0


def test_compare_refuses_runs_on_different_users(run_dir: Path, tmp_path: Path) -> None:
    other = synthetic_suite()
    for result in other.results.values():
        assert result.users is not None
        result.users = result.users + 1000
    save_run(other, tmp_path / "other")
    done = cinesync("compare", str(tmp_path / "other"), str(run_dir))
    assert done.returncode == 2 and "different users" in done.stderr


def test_run_suite_writes_the_run_directory_and_report(tmp_path: Path) -> None:
    from cinesync.manifest import parse_manifest

    manifest = parse_manifest(
        {
            "kind": "suite",
            "name": "tiny",
            "evaluation": {
                "metrics": ["ndcg@10", "hr@10", "coverage@10"],
                "filters": {"min_item_interactions": 60, "min_user_interactions": 20},
                "significance": {"baseline": "popularity", "bootstrap": 200},
                "fairness": {"attributes": ["activity"], "exposure_k": 5},
            },
            "models": [{"component": "popularity"}, {"component": "itemknn"}],
        }
    )
    outcome = run_suite(manifest, output=tmp_path, progress=False)  # type: ignore[arg-type]
    for path in ("results.json", "report.json", "report.md", "report.html", "evaluation/users.parquet"):
        assert (tmp_path / path).is_file(), path
    assert outcome.results["itemknn"].top_items is not None
    assert outcome.results["itemknn"].top_items.shape[1] == 5
    assert outcome.users is not None
    assert load_run(tmp_path).results["itemknn"].per_user["ndcg@10"].shape == (len(outcome.users),)


def test_unknown_fairness_attribute_fails_before_training(tmp_path: Path) -> None:
    from cinesync.errors import CineSyncError
    from cinesync.manifest import parse_manifest

    manifest = parse_manifest(
        {
            "kind": "suite",
            "name": "x",
            "evaluation": {"fairness": {"attributes": ["gender"]}},
            "models": [{"component": "popularity"}],
        }
    )
    with pytest.raises(CineSyncError, match=r"gender.*available: activity"):
        run_suite(manifest, progress=False)  # type: ignore[arg-type]


@pytest.mark.skipif(
    not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")),
    reason="needs headless Chromium (apt-get install -y chromium)",
)
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    report = build_report(synthetic_suite())
    write_report(report, tmp_path)
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench/check_report_in_browser.py"),
            str(tmp_path / "report.html"),
            "--screenshot",
            str(tmp_path / "shot.png"),
            "--height",
            "2400",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "shot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
