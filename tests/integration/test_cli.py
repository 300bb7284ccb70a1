"""The `cinesync` command end to end on the shipped ml-latest-small (filtered to keep it fast)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

SUITE = """
kind = "suite"
name = "cli-test"

[evaluation]
dataset = "ml-latest-small"
metrics = ["hr@10", "ndcg@10", "recall@20", "mrr"]

[evaluation.filters]
min_item_interactions = 25    # about 1,000 items: keeps EASE's inversion to a second

[[models]]
component = "popularity"

[[models]]
component = "ease"
params = { l2 = 100.0 }
"""


def cinesync(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cinesync.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("run")
    (root / "suite.toml").write_text(SUITE, encoding="utf-8")
    done = cinesync(
        "run", "suite.toml", "--output", "out", "--json", "results.json", "--no-progress", cwd=root
    )
    assert done.returncode == 0, done.stderr
    (root / "stdout.txt").write_text(done.stdout, encoding="utf-8")
    return root


def test_run_writes_results_json_with_every_metric_and_training_time(run_dir: Path) -> None:
    payload = json.loads((run_dir / "results.json").read_text())
    assert set(payload["results"]) == {"popularity", "ease"}
    for row in payload["results"].values():
        assert {"hr@10", "ndcg@10", "recall@20", "mrr", "train_seconds"} <= set(row)
    assert payload["protocol"]["candidates"] == "all"


def test_ease_beats_popularity_on_the_test_split(run_dir: Path) -> None:
    results = json.loads((run_dir / "results.json").read_text())["results"]
    assert results["ease"]["ndcg@10"] > results["popularity"]["ndcg@10"]


def test_run_prints_a_comparison_table(run_dir: Path) -> None:
    printed = (run_dir / "stdout.txt").read_text()
    assert "cli-test on ml-latest-small" in printed
    for header in ("ndcg@10", "recall@20", "train_seconds"):
        assert header in printed
    assert "popularity" in printed and "ease" in printed


def test_recommend_prints_a_table_per_user(run_dir: Path) -> None:
    done = cinesync("recommend", "out/artifacts/ease", "--user", "1", "-k", "5", cwd=run_dir)
    assert done.returncode == 0, done.stderr
    assert "top 5 for user 1" in done.stdout


def test_recommend_prints_titles_and_excludes_seen_items(run_dir: Path) -> None:
    done = cinesync("recommend", "out/artifacts/ease", "--user", "1", "-k", "5", "--json", cwd=run_dir)
    records = json.loads(done.stdout)
    assert len(records) == 5
    assert all(record["title"] and "(" in record["title"] for record in records)  # "Title (Year)"
    import pandas as pd

    ratings = pd.read_csv(
        Path(__file__).resolve().parents[2] / "cinesync/data/embedded/ml-latest-small/ratings.csv"
    )
    seen = set(ratings.loc[ratings.userId == 1, "movieId"])
    # The test item may be unseen by the model, but train+validation items must never come back.
    assert len({r["item"] for r in records} & seen) <= 1


def test_evaluate_reproduces_the_run_metrics(run_dir: Path) -> None:
    done = cinesync("evaluate", "out/artifacts/ease", "--json", cwd=run_dir)
    assert done.returncode == 0, done.stderr
    again = json.loads(done.stdout)
    recorded = json.loads((run_dir / "results.json").read_text())["results"]["ease"]
    for metric, value in again.items():
        assert value == pytest.approx(recorded[metric], abs=1e-6)


def test_artifact_reloads_in_a_new_process_with_identical_recommendations(run_dir: Path) -> None:
    first = cinesync("recommend", "out/artifacts/ease", "--user", "1", "--user", "7", "--json", cwd=run_dir)
    second = cinesync("recommend", "out/artifacts/ease", "--user", "1", "--user", "7", "--json", cwd=run_dir)
    assert first.stdout == second.stdout and first.returncode == 0


def test_unknown_user_is_a_clear_error(run_dir: Path) -> None:
    done = cinesync("recommend", "out/artifacts/ease", "--user", "999999", cwd=run_dir)
    assert done.returncode == 2
    assert "unknown user id" in done.stderr and "Traceback" not in done.stderr


def test_corrupted_artifact_is_refused(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "ease"
    shutil.copytree(run_dir / "out/artifacts/ease", copy)
    with (copy / "weights.safetensors").open("r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\x00\x01\x02\x03")
    done = cinesync("recommend", str(copy), "--user", "1")
    assert done.returncode == 2 and "checksum" in done.stderr


def test_bad_manifest_gives_one_readable_error(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(
        'kind = "suite"\nname = "x"\n[[models]]\ncomponent = "ease"\nparams = 3\n'
    )
    done = cinesync("run", "bad.toml", cwd=tmp_path)
    assert done.returncode == 2
    assert "bad.toml" in done.stderr and "models[0].params" in done.stderr
    assert "Traceback" not in done.stderr


def test_import_cinesync_does_not_import_torch() -> None:
    code = "import cinesync, sys; assert 'torch' not in sys.modules, 'torch imported'"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_plugins_list_is_fast_and_imports_no_plugin_code() -> None:
    code = (
        "import sys, json\n"
        "from cinesync.cli import main\n"
        "sys.argv = ['cinesync', 'plugins', 'list', '--json']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "bad = [m for m in sys.modules if m.startswith(('cinesync_plugins.', 'cinesync_example', 'torch'))]\n"
        "assert not bad, bad\n"
    )
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    assert elapsed < 1.5
    listed = json.loads(done.stdout)
    assert {"ease", "popularity", "itemknn", "bpr_mf"} <= {c["id"] for c in listed}
