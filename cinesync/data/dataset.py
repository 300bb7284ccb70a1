"""The dataset type every loader produces and every component consumes.

A :class:`Dataset` is a table of interactions over contiguous user and item indices, the :class:`IdMap` pair
that turns those indices back into the source's own ids, an item catalogue and optional user attributes.
Ids are mapped once, when the dataset is built; every subset and split shares the same maps, so indices mean
the same thing in training, evaluation and the saved artifact.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from cinesync.errors import DataError, UnknownIdError

#: Columns every interaction table has, in this order. Extra columns are context (device, party size, ...).
INTERACTION_COLUMNS = ("user", "item", "timestamp", "rating", "weight", "domain")
#: Catalogue columns with a fixed meaning; any other column is an arbitrary item feature.
CATALOG_COLUMNS = ("title", "year", "genres", "type", "tags", "text")


class IdMap:
    """A bijection between external ids (ints or strings, as the source spells them) and indices 0..n-1."""

    def __init__(self, ids: Iterable[Hashable], *, kind: str = "id") -> None:
        self.ids: list[Hashable] = list(ids)
        self.kind = kind
        self._index = {external: position for position, external in enumerate(self.ids)}
        if len(self._index) != len(self.ids):
            raise DataError(f"the {kind} id map has duplicate ids")

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, external: object) -> bool:
        return external in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and self.ids == other.ids

    def __repr__(self) -> str:
        return f"IdMap({self.kind}, n={len(self)})"

    def index(self, externals: Iterable[Hashable]) -> np.ndarray:
        """Indices of ``externals``; raises :class:`UnknownIdError` naming every id that is not mapped."""
        externals = list(externals)
        found = [self._index.get(self._normalise(external)) for external in externals]
        missing = [external for external, position in zip(externals, found, strict=True) if position is None]
        if missing:
            shown = ", ".join(repr(m) for m in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise UnknownIdError(
                f"unknown {self.kind} id(s) {shown}: not in the {len(self)} {self.kind}s this model knows"
            )
        return np.asarray(found, dtype=np.int64)

    def lookup(self, indices: Iterable[int]) -> list[Hashable]:
        """External ids of ``indices``."""
        return [self.ids[int(i)] for i in indices]

    def _normalise(self, external: Hashable) -> Hashable:
        # Ids typed on a command line arrive as strings; match them to integer ids when that is what we hold.
        if external in self._index:
            return external
        if isinstance(external, str) and external.lstrip("-").isdigit():
            return int(external)
        if isinstance(external, np.integer):
            return int(external)
        return external

    def to_json(self) -> list[Hashable]:
        return [i.item() if isinstance(i, np.generic) else i for i in self.ids]

    @classmethod
    def from_json(cls, ids: Sequence[Hashable], *, kind: str = "id") -> IdMap:
        return cls(ids, kind=kind)


@dataclass
class Dataset:
    """Interactions over contiguous indices, with the id maps, item catalogue and user attributes.

    ``interactions`` has the columns of :data:`INTERACTION_COLUMNS` (``user``/``item`` are int64 indices,
    ``timestamp`` int64 seconds or -1 when unknown, ``rating`` float or NaN, ``weight`` float, ``domain`` a
    string such as ``"movie"`` or ``"tv"``) plus any context columns. ``catalog`` is indexed by item index
    (0..n_items-1) with the columns of :data:`CATALOG_COLUMNS` and any item features; ``user_attributes`` is
    indexed by user index, or None.
    """

    name: str
    interactions: pd.DataFrame
    users: IdMap
    items: IdMap
    catalog: pd.DataFrame
    user_attributes: pd.DataFrame | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [c for c in INTERACTION_COLUMNS if c not in self.interactions.columns]
        if missing:
            raise DataError(f"dataset {self.name!r}: interactions lack column(s) {missing}")
        if len(self.catalog) != len(self.items):
            raise DataError(
                f"dataset {self.name!r}: the catalogue has {len(self.catalog)} rows "
                f"for {len(self.items)} items"
            )

    # -- sizes ---------------------------------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def __len__(self) -> int:
        return len(self.interactions)

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, users={self.n_users}, items={self.n_items}, "
            f"interactions={len(self.interactions)})"
        )

    @property
    def has_timestamps(self) -> bool:
        return bool(len(self.interactions)) and bool((self.interactions["timestamp"] >= 0).all())

    @property
    def context_columns(self) -> list[str]:
        return [c for c in self.interactions.columns if c not in INTERACTION_COLUMNS]

    # -- derived views -------------------------------------------------------------------------------------
    def with_interactions(self, interactions: pd.DataFrame, *, name: str | None = None) -> Dataset:
        """The same maps and catalogue over other interactions (a split part, a filtered subset)."""
        return replace(self, interactions=interactions.reset_index(drop=True), name=name or self.name)

    def user_item_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        return (
            self.interactions["user"].to_numpy(np.int64),
            self.interactions["item"].to_numpy(np.int64),
        )

    def csr(self, *, weights: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The user x item matrix in CSR form: ``(indptr, indices, values)``; duplicate pairs are summed."""
        users, items = self.user_item_pairs()
        values = (
            self.interactions["weight"].to_numpy(np.float32) if weights else np.ones(len(users), np.float32)
        )
        keys = users * self.n_items + items
        unique_keys, inverse = np.unique(keys, return_inverse=True)
        summed = np.zeros(len(unique_keys), np.float32)
        np.add.at(summed, inverse, values)
        rows = unique_keys // self.n_items
        indptr = np.zeros(self.n_users + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=self.n_users), out=indptr[1:])
        return indptr, (unique_keys % self.n_items).astype(np.int64), summed

    def item_counts(self) -> np.ndarray:
        """Number of interactions per item index."""
        return np.bincount(self.interactions["item"].to_numpy(np.int64), minlength=self.n_items)

    def user_counts(self) -> np.ndarray:
        return np.bincount(self.interactions["user"].to_numpy(np.int64), minlength=self.n_users)

    def sequences(self) -> list[np.ndarray]:
        """Each user's item indices ordered by time (ties in source order, as in the splits), by user index."""
        frame = self.interactions.sort_values(["user", "timestamp"], kind="stable")
        users = frame["user"].to_numpy(np.int64)
        items = frame["item"].to_numpy(np.int64)
        bounds = np.searchsorted(users, np.arange(self.n_users + 1))
        return [items[bounds[u] : bounds[u + 1]] for u in range(self.n_users)]

    def item_titles(self) -> list[str]:
        if "title" in self.catalog.columns:
            return [str(t) for t in self.catalog["title"].tolist()]
        return [str(i) for i in self.items.ids]

    def summary(self) -> dict[str, Any]:
        n = len(self.interactions)
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": n,
            "density": n / max(1, self.n_users * self.n_items),
            "domains": sorted(self.interactions["domain"].astype(str).unique().tolist()),
        }

    def describe_json(self) -> str:
        return json.dumps(self.summary())


def build_dataset(
    name: str,
    interactions: pd.DataFrame,
    catalog: pd.DataFrame | None = None,
    user_attributes: pd.DataFrame | None = None,
    *,
    item_id_column: str = "item",
    user_id_column: str = "user",
    metadata: dict[str, Any] | None = None,
) -> Dataset:
    """Build a :class:`Dataset` from interactions keyed by external ids.

    ``interactions`` needs ``user_id_column`` and ``item_id_column``; ``timestamp``, ``rating``, ``weight``
    and ``domain`` are filled with defaults when absent (-1, NaN, 1.0, ``"movie"``). ``catalog`` is indexed by
    external item id; items that have interactions but no catalogue row get an empty row. Only items with at
    least one interaction are indexed: full ranking is over the catalogue of interacted items. Users are
    indexed in order of first appearance after sorting, items in sorted id order, so indices are
    deterministic.
    """
    for column in (user_id_column, item_id_column):
        if column not in interactions.columns:
            raise DataError(f"dataset {name!r}: interactions have no {column!r} column")
    if interactions.empty:
        raise DataError(f"dataset {name!r} has no interactions")
    frame = interactions.rename(columns={user_id_column: "user_id", item_id_column: "item_id"}).copy()
    users = IdMap(sorted(frame["user_id"].unique().tolist()), kind="user")
    items = IdMap(sorted(frame["item_id"].unique().tolist()), kind="item")
    user_codes = pd.Index(users.ids).get_indexer(frame["user_id"])
    item_codes = pd.Index(items.ids).get_indexer(frame["item_id"])
    out = pd.DataFrame(
        {
            "user": user_codes.astype(np.int64),
            "item": item_codes.astype(np.int64),
            "timestamp": (
                frame["timestamp"].astype(np.int64)
                if "timestamp" in frame
                else np.full(len(frame), -1, np.int64)
            ),
            "rating": frame["rating"].astype(np.float32) if "rating" in frame else np.nan,
            "weight": frame["weight"].astype(np.float32) if "weight" in frame else np.float32(1.0),
            "domain": frame["domain"].astype(str) if "domain" in frame else "movie",
        }
    )
    for column in frame.columns:
        if column not in ("user_id", "item_id", *INTERACTION_COLUMNS):
            out[column] = frame[column].to_numpy()
    if out["rating"].isna().all():
        out["rating"] = out["rating"].astype(np.float32)
    full_catalog = catalog if catalog is not None else pd.DataFrame(index=pd.Index([], name="item_id"))
    aligned = full_catalog.reindex(pd.Index(items.ids, name="item_id"))
    for column in CATALOG_COLUMNS:
        if column not in aligned.columns:
            aligned[column] = None
    aligned["title"] = [
        str(title) if isinstance(title, str) else str(item_id)
        for title, item_id in zip(aligned["title"], items.ids, strict=True)
    ]
    aligned = aligned.reset_index().rename(columns={"item_id": "item_id"})
    attributes = None
    if user_attributes is not None:
        attributes = user_attributes.reindex(pd.Index(users.ids, name="user_id")).reset_index()
    return Dataset(
        name=name,
        interactions=out,
        users=users,
        items=items,
        catalog=aligned,
        user_attributes=attributes,
        metadata=dict(metadata or {}),
    )
