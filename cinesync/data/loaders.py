"""Readers for the public dataset formats and for generic tables, and the lookup of datasets by name.

Every loader returns a :class:`~cinesync.data.dataset.Dataset` built by
:func:`~cinesync.data.dataset.build_dataset`, so user and item indices follow the sorted source ids and are
the same on every load.
"""

from __future__ import annotations

import html
import inspect
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow.parquet

from cinesync.data.dataset import Dataset, build_dataset
from cinesync.errors import DataError

#: Datasets shipped inside the package (ml-latest-small), so the default job runs offline.
EMBEDDED_DATA_DIR = Path(__file__).parent / "embedded"
#: Environment variable naming a folder that holds dataset folders such as ``ml-100k``.
DATA_DIR_ENV = "CINESYNC_DATA_DIR"
MOVIELENS_URL = "https://grouplens.org/datasets/movielens/"

_NO_GENRES = "(no genres listed)"
# The last parenthesised four-digit year in a title: "Toy Story (1995)", "Death Note (2006–2007)",
# "Land Before Time III (1995) (V)".
_YEAR_PATTERN = r".*\((\d{4})(?:[-–]\d{0,4})?\)"
_TABLE_SUFFIXES = (".csv", ".tsv", ".tab", ".parquet", ".pq")

_MOVIELENS_CSV_FILES = ("ratings.csv", "movies.csv")
_MOVIELENS_100K_FILES = ("u.data", "u.item")
_MOVIELENS_DAT_FILES = ("ratings.dat", "movies.dat")
_ANIME_FILES = ("anime_info.dat",)
#: MovieLens flavours :func:`load_movielens` reads, by the files that identify them.
MOVIELENS_FORMATS = {
    "MovieLens CSV (ml-latest-small, ml-20m, ml-25m, ml-32m)": _MOVIELENS_CSV_FILES,
    "MovieLens 100K": _MOVIELENS_100K_FILES,
    "MovieLens DAT (ml-1m, ml-10m)": _MOVIELENS_DAT_FILES,
}
#: Dataset formats :func:`load_dataset` recognises, by the files that identify them.
KNOWN_FORMATS = {**MOVIELENS_FORMATS, "MyAnimeList sample (anime-mal-5k)": _ANIME_FILES}


# -- MovieLens ---------------------------------------------------------------------------------------------
def load_movielens(path: str | Path, *, name: str | None = None) -> Dataset:
    """Load a MovieLens release folder, detecting its flavour from the files present.

    Supports the CSV releases (ml-latest-small, ml-20m, ml-25m, ml-32m; optional ``tags.csv`` becomes the
    catalogue column ``tags``, optional ``links.csv`` the features ``imdbId``/``tmdbId``), ml-100k
    (``u.data``, ``u.item``, ``u.genre``, ``u.user``) and the ``::`` releases ml-1m / ml-10m (``users.dat``
    when present). Interactions carry the rating, weight 1.0, domain ``"movie"`` and the timestamp in
    seconds. The catalogue keeps the full title in ``title``, the year parsed from it in ``year`` (int or
    None), ``genres`` as a list of strings and ``type`` ``"movie"``. ``name`` defaults to the folder name.
    """
    folder = Path(path)
    name = name or folder.name
    if _has_files(folder, _MOVIELENS_CSV_FILES):
        return _load_movielens_csv(folder, name)
    if _has_files(folder, _MOVIELENS_100K_FILES):
        return _load_movielens_100k(folder, name)
    if _has_files(folder, _MOVIELENS_DAT_FILES):
        return _load_movielens_dat(folder, name)
    raise _unknown_format_error(folder, MOVIELENS_FORMATS)


def _load_movielens_csv(folder: Path, name: str) -> Dataset:
    ratings = pd.read_csv(
        folder / "ratings.csv",
        engine="c",
        dtype={"userId": np.int64, "movieId": np.int64, "rating": np.float32, "timestamp": np.int64},
    ).rename(columns={"userId": "user", "movieId": "item"})
    movies = pd.read_csv(
        folder / "movies.csv", engine="c", dtype={"movieId": np.int64, "title": str, "genres": str}
    )
    catalog = _movie_catalog(movies["movieId"], movies["title"], _split_genres(movies["genres"], r"\|"))
    tags_path = folder / "tags.csv"
    if tags_path.exists():
        tags = pd.read_csv(
            tags_path, engine="c", usecols=["movieId", "tag"], dtype={"movieId": np.int64, "tag": str}
        )
        tags = tags.dropna().drop_duplicates()
        tags_by_item = tags.groupby("movieId", sort=False)["tag"].agg(list)
        catalog["tags"] = [tags_by_item.get(item, []) for item in catalog.index]
    links_path = folder / "links.csv"
    if links_path.exists():
        # imdbId keeps its zero padding ("0114709"); tmdbId is missing for a few movies.
        links = pd.read_csv(
            links_path, engine="c", dtype={"movieId": np.int64, "imdbId": str, "tmdbId": "Int64"}
        )
        catalog = catalog.join(links.set_index("movieId")[["imdbId", "tmdbId"]])
    return build_dataset(name, ratings, catalog, metadata={"source": str(folder), "format": "movielens-csv"})


def _load_movielens_100k(folder: Path, name: str) -> Dataset:
    ratings = pd.read_csv(
        folder / "u.data",
        sep="\t",
        header=None,
        names=["user", "item", "rating", "timestamp"],
        dtype={"user": np.int64, "item": np.int64, "rating": np.float32, "timestamp": np.int64},
        engine="c",
    )
    genre_names = (
        pd.read_csv(folder / "u.genre", sep="|", header=None, names=["genre", "code"], encoding="latin-1")
        .sort_values("code")["genre"]
        .tolist()
    )
    items = pd.read_csv(
        folder / "u.item", sep="|", header=None, encoding="latin-1", dtype={0: np.int64, 1: str}, engine="c"
    )
    flags = items.iloc[:, -len(genre_names) :].to_numpy(bool)
    genres = pd.Series([[genre_names[j] for j in np.flatnonzero(row)] for row in flags])
    catalog = _movie_catalog(items[0], items[1], genres)
    attributes = None
    users_path = folder / "u.user"
    if users_path.exists():
        attributes = pd.read_csv(
            users_path,
            sep="|",
            header=None,
            names=["user", "age", "gender", "occupation", "zip"],
            dtype={"user": np.int64, "age": np.int64, "gender": str, "occupation": str, "zip": str},
            encoding="latin-1",
        ).set_index("user")
    return build_dataset(
        name, ratings, catalog, attributes, metadata={"source": str(folder), "format": "movielens-100k"}
    )


def _load_movielens_dat(folder: Path, name: str) -> Dataset:
    # "::" as separator needs the slow python engine; splitting on ":" with the C engine leaves empty fields
    # between the values, which usecols skips. Safe because ratings and users never contain a colon.
    ratings = pd.read_csv(
        folder / "ratings.dat",
        sep=":",
        header=None,
        usecols=[0, 2, 4, 6],
        dtype={0: np.int64, 2: np.int64, 4: np.float32, 6: np.int64},
        engine="c",
    )
    ratings.columns = ["user", "item", "rating", "timestamp"]
    # Titles contain colons, so movies.dat is split on "::" line by line; it has at most tens of thousands
    # of rows.
    movies = pd.Series(_read_text(folder / "movies.dat").splitlines()).str.split("::", n=2, expand=True)
    catalog = _movie_catalog(movies[0].astype(np.int64), movies[1], _split_genres(movies[2], r"\|"))
    attributes = None
    users_path = folder / "users.dat"
    if users_path.exists():
        attributes = pd.read_csv(
            users_path,
            sep=":",
            header=None,
            usecols=[0, 2, 4, 6, 8],
            dtype={0: np.int64, 2: str, 4: np.int64, 6: np.int64, 8: str},
            engine="c",
        )
        attributes.columns = ["user", "gender", "age", "occupation", "zip"]
        attributes = attributes.set_index("user")
    return build_dataset(
        name, ratings, catalog, attributes, metadata={"source": str(folder), "format": "movielens-dat"}
    )


def _movie_catalog(item_ids: pd.Series, titles: pd.Series, genres: pd.Series) -> pd.DataFrame:
    titles = titles.fillna("").astype(str).str.strip()
    return pd.DataFrame(
        {
            "title": titles.to_numpy(),
            "year": _parse_years(titles).to_numpy(),
            "genres": genres.to_numpy(),
            "type": "movie",
        },
        index=pd.Index(item_ids.to_numpy(np.int64), name="item_id"),
    )


def _parse_years(titles: pd.Series) -> pd.Series:
    years = pd.to_numeric(titles.str.extract(_YEAR_PATTERN)[0]).astype("Int64")
    return years.astype(object).where(years.notna(), None)


def _split_genres(genres: pd.Series, pattern: str) -> pd.Series:
    """Genre lists from strings split on the regex ``pattern`` or from sequences; missing values give []."""
    return pd.Series([_genre_list(value, pattern) for value in genres], index=genres.index, dtype=object)


def _genre_list(value: object, pattern: str) -> list[str]:
    if isinstance(value, str):
        parts = re.split(pattern, value)
    elif isinstance(value, (list, tuple, np.ndarray)):
        parts = [str(part) for part in value]
    else:
        return []
    return [part.strip() for part in parts if part.strip() and part.strip() != _NO_GENRES]


def _read_text(path: Path) -> str:
    # ml-1m's movies.dat is latin-1; later releases are utf-8, which latin-1 would silently garble.
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


# -- anime -------------------------------------------------------------------------------------------------
def load_anime(
    path: str | Path,
    *,
    feedback: Literal["history", "ratings"] = "history",
    types: Sequence[str] | None = ("Movie", "TV"),
    name: str | None = None,
) -> Dataset:
    """Load the MyAnimeList sample (anime-mal-5k): a cross-domain movie/TV dataset without timestamps.

    ``feedback="history"`` reads every list entry (implicit, rating NaN), ``"ratings"`` the explicit 1-10
    scores. ``types`` keeps only anime of those types as ``anime_info.dat`` spells them (None keeps all). The
    interaction ``domain`` is the lower-cased type (``"movie"``, ``"tv"``, ``"ova"``...); timestamps are -1.
    The catalogue has title, genres (list), type and the features episodes, rating and members.
    """
    folder = Path(path)
    files = {"history": "anime_history.dat", "ratings": "anime_ratings.dat"}
    if feedback not in files:
        raise DataError(f"unknown anime feedback {feedback!r}: use 'history' or 'ratings'")
    info = pd.read_csv(
        folder / "anime_info.dat",
        sep="\t",
        dtype={"anime_ids": np.int64, "name": str, "genre": str, "type": str},
        engine="c",
    )
    if types is not None:
        unknown = sorted(set(types) - set(info["type"].unique()))
        if unknown:
            raise DataError(
                f"anime type(s) {unknown} do not occur in {folder / 'anime_info.dat'}; "
                f"the types there are {sorted(info['type'].unique())}"
            )
        info = info[info["type"].isin(list(types))]
    interactions = pd.read_csv(
        folder / files[feedback],
        sep="\t",
        dtype={"User_ID": np.int64, "Anime_ID": np.int64, "Feedback": np.float32},
        engine="c",
    ).rename(columns={"User_ID": "user", "Anime_ID": "item", "Feedback": "rating"})
    domain_by_item = pd.Series(info["type"].str.lower().to_numpy(), index=info["anime_ids"].to_numpy())
    interactions = interactions[interactions["item"].isin(domain_by_item.index)]
    interactions["domain"] = domain_by_item.reindex(interactions["item"]).to_numpy()
    if feedback == "history":
        interactions = interactions.drop(columns="rating")
    catalog = pd.DataFrame(
        {
            # Names carry HTML entities from the MyAnimeList API ("Gintama&#039;").
            "title": [html.unescape(title) for title in info["name"]],
            "genres": _split_genres(info["genre"], ",").to_numpy(),
            "type": info["type"].to_numpy(),
            "episodes": info["episodes"].to_numpy(),
            "rating": info["rating"].to_numpy(),
            "members": info["members"].to_numpy(),
        },
        index=pd.Index(info["anime_ids"].to_numpy(), name="item_id"),
    )
    return build_dataset(
        name or folder.name,
        interactions,
        catalog,
        metadata={"source": str(folder), "format": "anime", "feedback": feedback},
    )


# -- generic tables ----------------------------------------------------------------------------------------
def load_table(
    path: str | Path,
    *,
    columns: Mapping[str, str],
    items_path: str | Path | None = None,
    item_columns: Mapping[str, str] | None = None,
    name: str | None = None,
    sep: str | None = None,
) -> Dataset:
    """Load interactions from a CSV/TSV or Parquet file (chosen by suffix) with a column mapping.

    ``columns`` maps our names to the file's: ``user`` and ``item`` are required; ``timestamp`` (numbers are
    seconds, strings and datetimes are converted), ``rating``, ``weight`` and ``domain`` are optional, and any
    other mapped name becomes a context column. ``items_path`` is an optional catalogue file whose
    ``item_columns`` maps ``item``, ``title``, ``genres``, ``year``, ``type``, ``text``... to its columns
    (only mapped columns are read; without a mapping every column is taken under its own name, the id column
    named like the interactions' item column); genres given as strings are split on ``|`` or ``,``. ``sep``
    overrides the delimiter of text files (default ``,``, tab for ``.tsv``/``.tab``). ``name`` defaults to the
    file stem.
    """
    path = Path(path)
    missing_keys = [key for key in ("user", "item") if key not in columns]
    if missing_keys:
        raise DataError(f"the column mapping for {path} lacks {missing_keys}: map them to the file's columns")
    interactions = _read_mapped_table(path, columns, sep)
    if "timestamp" in interactions:
        interactions["timestamp"] = _epoch_seconds(interactions["timestamp"])
    catalog = None
    if items_path is not None:
        if item_columns is not None and "item" not in item_columns:
            raise DataError(f"the item column mapping for {items_path} lacks 'item': map it to the id column")
        table = _read_mapped_table(
            Path(items_path),
            item_columns or {"item": columns["item"]},
            sep,
            keep_rest=item_columns is None,
        )
        if "genres" in table:
            table["genres"] = _split_genres(table["genres"], r"[|,]")
        if "year" in table:
            years = pd.to_numeric(table["year"], errors="coerce").astype("Int64")
            table["year"] = years.astype(object).where(years.notna(), None)
        catalog = table.set_index("item")
    return build_dataset(
        name or path.stem, interactions, catalog, metadata={"source": str(path), "format": "table"}
    )


def _read_mapped_table(
    path: Path, mapping: Mapping[str, str], sep: str | None, *, keep_rest: bool = False
) -> pd.DataFrame:
    """The file's mapped columns under our names (plus, with ``keep_rest``, every other column as is)."""
    if not path.is_file():
        raise DataError(f"table file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in _TABLE_SUFFIXES:
        raise DataError(f"cannot read {path}: table files must end in one of {', '.join(_TABLE_SUFFIXES)}")
    if suffix in (".parquet", ".pq"):
        available = pyarrow.parquet.read_schema(path).names
    else:
        frame = pd.read_csv(path, sep=sep or ("\t" if suffix in (".tsv", ".tab") else ","), engine="c")
        available = list(frame.columns)
    absent = [column for column in mapping.values() if column not in available]
    if absent:
        raise DataError(
            f"{path} has no column(s) {absent}; its columns are {available}: fix the column mapping"
        )
    if suffix in (".parquet", ".pq"):
        frame = pd.read_parquet(path, columns=None if keep_rest else list(dict.fromkeys(mapping.values())))
    if keep_rest:
        return frame.rename(columns={source: ours for ours, source in mapping.items()})
    return pd.DataFrame({ours: frame[source] for ours, source in mapping.items()})


def _epoch_seconds(values: pd.Series) -> pd.Series:
    """Timestamps as int64 seconds since the epoch, -1 where missing."""
    if pd.api.types.is_numeric_dtype(values):
        return values.fillna(-1).astype(np.int64)
    moments = pd.to_datetime(values, utc=True)
    seconds = (moments - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.fillna(-1).astype(np.int64)


# -- lookup by name ----------------------------------------------------------------------------------------
def resolve_dataset(name: str, data_dir: str | Path | None = None) -> Path:
    """The path of dataset ``name``.

    A name containing a path separator (or absolute) is used as is. A bare name such as ``"ml-100k"`` is
    looked up, in order, in ``data_dir``, in the folder named by ``$CINESYNC_DATA_DIR`` and, for
    ``ml-latest-small`` only, in the embedded data shipped with CineSync. Raises :class:`DataError` naming
    every place looked.
    """
    if os.sep in name or "/" in name or Path(name).is_absolute():
        path = Path(name).expanduser()
        if not path.exists():
            raise DataError(f"dataset path {path} does not exist: check the path or pass a dataset name")
        return path
    candidates: list[Path] = []
    looked: list[str] = []
    if data_dir is not None:
        candidates.append(Path(data_dir).expanduser() / name)
        looked.append(f"{candidates[-1]} (--data-dir)")
    else:
        looked.append("--data-dir (not given)")
    env_dir = os.environ.get(DATA_DIR_ENV)
    if env_dir:
        candidates.append(Path(env_dir).expanduser() / name)
        looked.append(f"{candidates[-1]} (${DATA_DIR_ENV})")
    else:
        looked.append(f"${DATA_DIR_ENV} (not set)")
    if name == "ml-latest-small":
        candidates.append(EMBEDDED_DATA_DIR / name)
        looked.append(f"{candidates[-1]} (embedded)")
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise DataError(
        f"dataset {name!r} not found; looked in: {'; '.join(looked)}. Pass --data-dir with the folder that "
        f"contains {name!r}, or set {DATA_DIR_ENV} to it. MovieLens datasets can be downloaded from "
        f"{MOVIELENS_URL}."
    )


def load_dataset(name: str, data_dir: str | Path | None = None, **options: Any) -> Dataset:
    """Resolve ``name`` (see :func:`resolve_dataset`), detect its format and load it under that name.

    A folder is read as MovieLens or the anime sample according to the files in it (see
    :data:`KNOWN_FORMATS`); a ``.csv``/``.tsv``/``.parquet`` file is read with :func:`load_table`, which needs
    ``columns=``. ``options`` go to the loader; ones it does not take raise :class:`DataError`.
    """
    path = resolve_dataset(name, data_dir)
    loader: Callable[..., Dataset]
    if path.is_file() and path.suffix.lower() in _TABLE_SUFFIXES:
        loader = load_table
    elif _has_files(path, _ANIME_FILES):
        loader = load_anime
    elif any(_has_files(path, files) for files in MOVIELENS_FORMATS.values()):
        loader = load_movielens
    else:
        raise _unknown_format_error(path, KNOWN_FORMATS)
    # Which options apply depends on the format a name resolves to, so say which ones this format takes.
    accepted = [p for p in inspect.signature(loader).parameters if p not in ("path", "name")]
    unexpected = sorted(set(options) - set(accepted))
    if unexpected:
        raise DataError(
            f"dataset {name!r} ({loader.__name__}) does not take option(s) {unexpected}; "
            f"it takes {accepted or 'none'}"
        )
    return loader(path, name=name, **options)


def _has_files(folder: Path, names: Sequence[str]) -> bool:
    return folder.is_dir() and all((folder / file).is_file() for file in names)


def _unknown_format_error(path: Path, formats: Mapping[str, Sequence[str]]) -> DataError:
    seen = sorted(p.name for p in path.iterdir()) if path.is_dir() else [path.name]
    known = "; ".join(f"{label}: {', '.join(files)}" for label, files in formats.items())
    return DataError(
        f"cannot tell the dataset format of {path}: it holds {seen or 'nothing'}. Known formats and the "
        f"files that identify them: {known}; a .csv or .parquet file loads with a column mapping."
    )


__all__ = [
    "DATA_DIR_ENV",
    "EMBEDDED_DATA_DIR",
    "KNOWN_FORMATS",
    "MOVIELENS_FORMATS",
    "load_anime",
    "load_dataset",
    "load_movielens",
    "load_table",
    "resolve_dataset",
]
