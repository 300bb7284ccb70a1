"""The installed example plugin (tests/fixtures/cinesync-example-plugin) used like any third-party plugin."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import cinesync
from cinesync.cli import cli
from cinesync.data.dataset import Dataset, build_dataset
from cinesync.manifest import SuiteManifest, load_manifest
from cinesync.suite import SuiteResult, run_suite


@pytest.fixture(scope="module")
def generated() -> Dataset:
    """40 users who each watched 8 of 30 items, drawn at random."""
    rng = np.random.default_rng(7)
    rows = [(f"u{user}", f"i{item}") for user in range(40) for item in rng.choice(30, size=8, replace=False)]
    return build_dataset("generated", pd.DataFrame(rows, columns=["user", "item"]))


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[SuiteResult, Path]:
    """acme.cooccurrence and popularity evaluated from a suite manifest, with the hook log switched on."""
    folder = tmp_path_factory.mktemp("suite")
    manifest = folder / "acme.toml"
    manifest.write_text(
        textwrap.dedent(
            """
            kind = "suite"
            name = "acme-vs-popularity"

            [evaluation]
            dataset = "ml-latest-small"
            metrics = ["hr@10", "ndcg@10"]

            [[models]]
            component = "acme.cooccurrence"

            [[models]]
            component = "popularity"
            """
        ),
        encoding="utf-8",
    )
    log = folder / "hooks.jsonl"
    loaded = load_manifest(manifest)
    assert isinstance(loaded, SuiteManifest)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CINESYNC_EXAMPLE_HOOK_LOG", str(log))
        outcome = run_suite(loaded, source=str(manifest), progress=False)
    return outcome, log


def test_plugins_list_shows_the_example_recommender() -> None:
    result = CliRunner().invoke(cli, ["plugins", "list", "--json", "--kind", "recommender"])
    assert result.exit_code == 0, result.output
    rows = {row["id"]: row for row in json.loads(result.output)}
    assert rows["acme.cooccurrence"]["distribution"] == "cinesync-example-plugin"
    assert rows["acme.cooccurrence"]["target"] == "cinesync_example.cooccurrence:CoOccurrence"


def test_cooccurrence_fits_and_recommends_unseen_items(generated: Dataset) -> None:
    model = cinesync.build("acme.cooccurrence").fit(generated)
    users = ["u0", "u1", "u2"]
    recommendations = model.recommend(users, k=5)
    seen = generated.interactions.groupby("user")["item"].apply(set)
    for user, items, scores in zip(users, recommendations.items, recommendations.scores, strict=True):
        assert len(items) == 5
        assert scores == sorted(scores, reverse=True)
        assert not set(generated.items.index(items).tolist()) & seen[generated.users.index([user])[0]]


def test_cooccurrence_scores_an_item_subset_like_the_full_matrix(generated: Dataset) -> None:
    import torch

    model = cinesync.build("acme.cooccurrence", normalise=False).fit(generated)
    users, items = torch.tensor([0, 5, 9]), torch.tensor([3, 1, 20])
    assert torch.equal(model.score(users, items), model.score(users)[:, items])


def test_cooccurrence_round_trips_through_an_artifact(generated: Dataset, tmp_path: Path) -> None:
    model = cinesync.build("acme.cooccurrence").fit(generated)
    model.save(str(tmp_path / "acme"))
    again = cinesync.load(str(tmp_path / "acme"))
    assert again.recommend(["u3", "u4"], k=5) == model.recommend(["u3", "u4"], k=5)


def test_suite_manifest_evaluates_the_plugin_next_to_a_builtin(suite_run: tuple[SuiteResult, Path]) -> None:
    outcome, _ = suite_run
    assert set(outcome.results) == {"acme.cooccurrence", "popularity"}
    for result in outcome.results.values():
        assert set(result.metrics) == {"hr@10", "ndcg@10"}
        assert 0.0 < result.metrics["hr@10"] <= 1.0


def test_evaluation_end_hook_logs_each_model(suite_run: tuple[SuiteResult, Path]) -> None:
    _, log = suite_run
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert [r["model"] for r in records] == ["acme.cooccurrence", "popularity"]
    assert all(r["dataset"] == "ml-latest-small" for r in records)


def _doctor() -> tuple[int, list[str]]:
    result = CliRunner().invoke(cli, ["plugins", "doctor"], env={"COLUMNS": "1000"})
    return result.exit_code, result.output.splitlines()


def test_doctor_reports_the_broken_plugin_and_exits_1() -> None:
    exit_code, lines = _doctor()
    assert exit_code == 1
    (broken,) = [line for line in lines if line.startswith("broken")]
    assert "acme.broken" in broken
    assert "cinesync-example-plugin" in broken


def test_doctor_reports_every_other_component_ok() -> None:
    _, lines = _doctor()
    rows = [line for line in lines if line.startswith(("ok", "broken"))]
    assert any("acme.cooccurrence" in line for line in rows)
    assert [line for line in rows if not line.startswith("ok") and "acme.broken" not in line] == []
