"""Manifests: structure validation with errors naming the file and field, component checks, schemas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cinesync.errors import ManifestError
from cinesync.manifest import SuiteManifest, check_components, json_schemas, load_manifest

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "suite.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_every_shipped_manifest_is_valid() -> None:
    for path in sorted((ROOT / "registry").rglob("*.toml")):
        manifest = load_manifest(path)
        check_components(manifest, str(path))


def test_suite_inlines_model_manifests_relative_to_its_file() -> None:
    suite = load_manifest(ROOT / "registry/suites/quickstart.toml")
    assert isinstance(suite, SuiteManifest)
    assert [m.display_name for m in suite.models] == ["popularity", "itemknn", "ease", "bpr_mf"]
    ease = suite.models[2]
    assert ease.component == "ease" and ease.params["l2"] == 50.0


def test_protocol_defaults_are_full_ranking_leave_last_out(tmp_path: Path) -> None:
    suite = load_manifest(
        write(tmp_path, 'kind = "suite"\nname = "s"\n[[models]]\ncomponent = "popularity"\n')
    )
    assert isinstance(suite, SuiteManifest)
    assert suite.evaluation.candidates == "all"
    assert suite.evaluation.split.method == "leave_last_out"
    assert suite.evaluation.dataset.name == "ml-latest-small"


def test_unknown_field_names_file_and_path(tmp_path: Path) -> None:
    path = write(
        tmp_path, 'kind = "suite"\nname = "s"\n[evaluation]\nsplitt = 1\n[[models]]\ncomponent = "ease"\n'
    )
    with pytest.raises(ManifestError) as error:
        load_manifest(path)
    assert str(path) in str(error.value)
    assert "evaluation.splitt" in str(error.value)
    assert "Traceback" not in str(error.value)


def test_wrong_value_names_the_nested_field_and_expectation(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'kind = "suite"\nname = "s"\n[evaluation.split]\nmethod = "shuffle"\n[[models]]\ncomponent = "ease"\n',
    )
    with pytest.raises(ManifestError, match=r"evaluation\.split\.method .*leave_last_out"):
        load_manifest(path)


def test_missing_kind_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="kind is required"):
        load_manifest(write(tmp_path, 'name = "s"\n'))


def test_invalid_toml_reports_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "kind = \n")
    with pytest.raises(ManifestError, match="not valid TOML"):
        load_manifest(path)


def test_metric_syntax_is_checked(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'kind = "suite"\nname = "s"\n[evaluation]\nmetrics = ["ndcg@ten"]\n[[models]]\ncomponent = "ease"\n',
    )
    with pytest.raises(ManifestError, match=r"evaluation\.metrics.*ndcg@ten"):
        load_manifest(path)


def test_model_needs_component_or_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"models\[0\].*exactly one of"):
        load_manifest(write(tmp_path, 'kind = "suite"\nname = "s"\n[[models]]\nname = "x"\n'))


def test_duplicate_model_names_are_refused(tmp_path: Path) -> None:
    text = 'kind = "suite"\nname = "s"\n[[models]]\ncomponent = "ease"\n[[models]]\ncomponent = "ease"\n'
    with pytest.raises(ManifestError, match="unique"):
        load_manifest(write(tmp_path, text))


def test_component_check_reports_unknown_component_and_bad_params(tmp_path: Path) -> None:
    text = (
        'kind = "suite"\nname = "s"\n'
        '[[models]]\ncomponent = "no_such_model"\n'
        '[[models]]\ncomponent = "ease"\nparams = { l2 = "lots" }\n'
        '[[models]]\ncomponent = "bpr_mf"\ntraining = { epochz = 3 }\n'
    )
    path = write(tmp_path, text)
    manifest = load_manifest(path)
    with pytest.raises(ManifestError) as error:
        check_components(manifest, str(path))
    message = str(error.value)
    assert "models[0].component" in message and "no_such_model" in message
    assert "models[1].params.l2" in message
    assert "models[2].training.epochz" in message


def test_exported_schemas_match_the_models() -> None:
    for kind, schema in json_schemas().items():
        committed = json.loads((ROOT / "registry/schema" / f"{kind}.schema.json").read_text())
        assert committed == schema, f"registry/schema/{kind}.schema.json is stale: run 'make schema'"
