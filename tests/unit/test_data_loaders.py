from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cinesync.data import (
    DATA_DIR_ENV,
    EMBEDDED_DATA_DIR,
    Dataset,
    load_anime,
    load_dataset,
    load_movielens,
    load_table,
    resolve_dataset,
)
from cinesync.errors import DataError

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def shared_dataset(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{name} is not in {SHARED_DATA} (the shared data folder beside the repository)")
    return path


def catalog_row(dataset: Dataset, item_id: int) -> pd.Series:
    return dataset.catalog.iloc[int(dataset.items.index([item_id])[0])]


@pytest.fixture(autouse=True)
def no_data_dir_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)


# -- MovieLens ---------------------------------------------------------------------------------------------
def test_embedded_ml_latest_small_has_the_official_counts() -> None:
    dataset = load_dataset("ml-latest-small")
    assert dataset.name == "ml-latest-small"
    assert (dataset.n_users, dataset.n_items, len(dataset)) == (610, 9724, 100836)
    assert dataset.has_timestamps
    assert set(dataset.interactions["domain"]) == {"movie"}
    assert dataset.interactions["rating"].between(0.5, 5.0).all()


def test_movielens_catalogue_parses_genres_year_tags_and_links() -> None:
    dataset = load_movielens(EMBEDDED_DATA_DIR / "ml-latest-small")
    toy_story = catalog_row(dataset, 1)
    assert toy_story["title"] == "Toy Story (1995)"
    assert toy_story["year"] == 1995
    assert toy_story["genres"] == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert toy_story["type"] == "movie"
    assert "pixar" in toy_story["tags"]
    assert (toy_story["imdbId"], toy_story["tmdbId"]) == ("0114709", 862)
    assert catalog_row(dataset, 171749)["year"] == 2006  # "Death Note: Desu nôto (2006–2007)"
    assert all(isinstance(genres, list) for genres in dataset.catalog["genres"])
    assert not any("(no genres listed)" in genres for genres in dataset.catalog["genres"])


def test_movielens_indices_are_the_same_on_every_load() -> None:
    first = load_movielens(EMBEDDED_DATA_DIR / "ml-latest-small")
    second = load_movielens(EMBEDDED_DATA_DIR / "ml-latest-small")
    assert first.users == second.users and first.items == second.items
    assert first.items.ids == sorted(first.items.ids)


def test_ml_100k_has_the_official_counts_and_user_attributes() -> None:
    dataset = load_movielens(shared_dataset("ml-100k"))
    assert (dataset.n_users, dataset.n_items, len(dataset)) == (943, 1682, 100000)
    assert dataset.user_attributes is not None
    assert list(dataset.user_attributes.columns) == ["user_id", "age", "gender", "occupation", "zip"]
    assert dataset.user_attributes["gender"].value_counts().to_dict() == {"M": 670, "F": 273}
    toy_story = catalog_row(dataset, 1)
    assert (toy_story["title"], toy_story["year"]) == ("Toy Story (1995)", 1995)
    assert toy_story["genres"] == ["Animation", "Children's", "Comedy"]


def test_movielens_dat_releases_are_read_with_their_users(tmp_path: Path) -> None:
    (tmp_path / "ratings.dat").write_text("1::10::5::978300760\n2::10::3::978302109\n2::20::4::978301968\n")
    (tmp_path / "movies.dat").write_bytes(
        "10::Star Wars: Episode IV (1977)::Action|Sci-Fi\n20::Amélie (2001)::Comedy|Romance\n".encode(
            "latin-1"
        )
    )
    (tmp_path / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    dataset = load_movielens(tmp_path, name="ml-1m-sample")
    assert (dataset.name, dataset.n_users, dataset.n_items, len(dataset)) == ("ml-1m-sample", 2, 2, 3)
    assert catalog_row(dataset, 10)["title"] == "Star Wars: Episode IV (1977)"
    assert catalog_row(dataset, 20)[["title", "year"]].tolist() == ["Amélie (2001)", 2001]
    assert catalog_row(dataset, 20)["genres"] == ["Comedy", "Romance"]
    assert dataset.user_attributes is not None
    assert dataset.user_attributes[["gender", "age", "zip"]].values.tolist() == [
        ["F", 1, "48067"],
        ["M", 56, "70072"],
    ]


# -- anime -------------------------------------------------------------------------------------------------
def test_anime_history_of_movies_and_tv_matches_the_readme_counts() -> None:
    dataset = load_anime(shared_dataset("anime-mal-5k"))
    assert dataset.interactions["domain"].value_counts().to_dict() == {"tv": 352_397, "movie": 69_996}
    assert not dataset.has_timestamps
    assert dataset.interactions["rating"].isna().all()
    assert set(dataset.catalog["type"]) == {"Movie", "TV"}
    assert {"episodes", "rating", "members"} <= set(dataset.catalog.columns)


def test_anime_ratings_of_every_type() -> None:
    dataset = load_dataset(str(shared_dataset("anime-mal-5k")), feedback="ratings", types=None)
    assert len(dataset) == 419_943 and dataset.n_users == 4_714
    assert dataset.interactions["rating"].between(1, 10).all()
    assert set(dataset.interactions["domain"]) == {"tv", "movie", "ova", "special", "ona", "music"}


def test_anime_rejects_a_type_that_does_not_occur() -> None:
    with pytest.raises(DataError, match="the types there are"):
        load_anime(shared_dataset("anime-mal-5k"), types=("Movie", "Film"))


# -- generic tables ----------------------------------------------------------------------------------------
def test_load_table_reads_a_mapped_csv_with_a_catalogue(tmp_path: Path) -> None:
    pd.DataFrame(
        {
            "account": ["u2", "u1", "u1"],
            "title_id": ["b", "a", "b"],
            "watched_at": ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", "1970-01-01T00:01:00Z"],
            "device": ["tv", "phone", "tv"],
        }
    ).to_csv(tmp_path / "events.csv", index=False)
    pd.DataFrame(
        {"id": ["a", "b"], "name": ["Alpha", "Beta"], "kinds": ["Drama|Comedy", "Horror, Drama"]}
    ).to_csv(tmp_path / "titles.csv", index=False)
    dataset = load_table(
        tmp_path / "events.csv",
        columns={"user": "account", "item": "title_id", "timestamp": "watched_at", "device": "device"},
        items_path=tmp_path / "titles.csv",
        item_columns={"item": "id", "title": "name", "genres": "kinds"},
    )
    assert dataset.name == "events"
    assert dataset.users.ids == ["u1", "u2"] and dataset.items.ids == ["a", "b"]
    assert dataset.context_columns == ["device"]
    assert sorted(dataset.interactions["timestamp"]) == [60, 1704067200, 1704153600]
    assert dataset.catalog["genres"].tolist() == [["Drama", "Comedy"], ["Horror", "Drama"]]
    assert dataset.catalog["title"].tolist() == ["Alpha", "Beta"]


def test_load_table_reads_parquet(tmp_path: Path) -> None:
    pd.DataFrame(
        {"uid": [1, 1, 2], "iid": [5, 6, 5], "score": [0.5, 2.0, 1.0], "kind": ["movie", "tv", "tv"]}
    ).to_parquet(tmp_path / "events.parquet")
    dataset = load_table(
        tmp_path / "events.parquet",
        columns={"user": "uid", "item": "iid", "weight": "score", "domain": "kind"},
    )
    assert len(dataset) == 3 and not dataset.has_timestamps
    np.testing.assert_allclose(sorted(dataset.interactions["weight"]), [0.5, 1.0, 2.0])
    assert sorted(dataset.interactions["domain"]) == ["movie", "tv", "tv"]


def test_load_table_names_the_missing_columns(tmp_path: Path) -> None:
    pd.DataFrame({"uid": [1], "iid": [2]}).to_csv(tmp_path / "events.csv", index=False)
    with pytest.raises(DataError, match=r"no column\(s\) \['item_id'\]; its columns are \['uid', 'iid'\]"):
        load_table(tmp_path / "events.csv", columns={"user": "uid", "item": "item_id"})


# -- lookup by name ----------------------------------------------------------------------------------------
def test_resolve_falls_back_to_the_embedded_ml_latest_small() -> None:
    assert resolve_dataset("ml-latest-small") == EMBEDDED_DATA_DIR / "ml-latest-small"


def test_resolve_prefers_data_dir_then_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "given" / "ml-latest-small").mkdir(parents=True)
    (tmp_path / "env" / "ml-latest-small").mkdir(parents=True)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    assert resolve_dataset("ml-latest-small", tmp_path / "given") == tmp_path / "given" / "ml-latest-small"
    assert resolve_dataset("ml-latest-small") == tmp_path / "env" / "ml-latest-small"


def test_load_dataset_finds_a_name_in_the_environment_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(shared_dataset("ml-100k").parent))
    dataset = load_dataset("ml-100k")
    assert dataset.name == "ml-100k" and dataset.n_users == 943


def test_resolve_error_names_every_place_looked_and_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    with pytest.raises(DataError) as error:
        resolve_dataset("ml-1m", tmp_path / "given")
    message = str(error.value)
    assert "'ml-1m'" in message
    assert str(tmp_path / "given" / "ml-1m") in message and str(tmp_path / "env" / "ml-1m") in message
    assert "--data-dir" in message and DATA_DIR_ENV in message
    assert "https://grouplens.org/datasets/movielens/" in message


def test_resolve_uses_a_path_as_is(tmp_path: Path) -> None:
    assert resolve_dataset(str(tmp_path)) == tmp_path
    with pytest.raises(DataError, match="does not exist"):
        resolve_dataset(str(tmp_path / "absent"))


def test_load_dataset_lists_the_files_it_saw_when_the_format_is_unknown(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(DataError, match=r"holds \['notes.txt'\].*MovieLens 100K: u.data, u.item"):
        load_dataset(str(tmp_path))


def test_load_dataset_rejects_options_the_format_does_not_take() -> None:
    with pytest.raises(DataError, match=r"does not take option\(s\) \['feedback'\]"):
        load_dataset("ml-latest-small", feedback="ratings")
