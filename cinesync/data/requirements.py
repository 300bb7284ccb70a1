"""What a component may require of a dataset, and how to tell whether a dataset provides it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cinesync.data.dataset import Dataset

#: Requirement names and what they mean; ``context:<column>`` names one context column.
KNOWN_REQUIREMENTS = {
    "timestamps": "a timestamp on every interaction",
    "ratings": "an explicit rating on every interaction",
    "item_text": "a text description for items (catalogue column 'text')",
    "item_genres": "genres for items (catalogue column 'genres')",
    "item_features": "item feature columns in the catalogue",
    "user_attributes": "a table of user attributes",
    "domains": "interactions in more than one domain (movie and tv)",
}


def missing_requirements(dataset: Dataset, requires: Iterable[str]) -> list[str]:
    """The human-readable descriptions of the requirements ``dataset`` does not meet."""
    missing: list[str] = []
    for requirement in sorted(requires):
        if requirement.startswith("context:"):
            column = requirement.split(":", 1)[1]
            if column not in dataset.interactions.columns:
                missing.append(f"context column {column!r}")
            continue
        if requirement not in KNOWN_REQUIREMENTS:
            missing.append(f"{requirement!r} (an unknown requirement)")
        elif not _provides(dataset, requirement):
            missing.append(KNOWN_REQUIREMENTS[requirement])
    return missing


def _provides(dataset: Dataset, requirement: str) -> bool:
    frame, catalog = dataset.interactions, dataset.catalog
    if requirement == "timestamps":
        return dataset.has_timestamps
    if requirement == "ratings":
        return bool(len(frame)) and not frame["rating"].isna().any()
    if requirement == "item_text":
        return catalog["text"].notna().any()
    if requirement == "item_genres":
        return catalog["genres"].notna().any()
    if requirement == "item_features":
        from cinesync.data.dataset import CATALOG_COLUMNS

        return any(c not in (*CATALOG_COLUMNS, "item_id") for c in catalog.columns)
    if requirement == "user_attributes":
        return dataset.user_attributes is not None
    if requirement == "domains":
        return frame["domain"].nunique() > 1
    return False
