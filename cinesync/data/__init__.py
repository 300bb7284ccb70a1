"""Datasets: the :class:`Dataset` type, loaders for public formats and tables, filters and splits."""

from cinesync.data.dataset import Dataset, IdMap, build_dataset
from cinesync.data.loaders import (
    DATA_DIR_ENV,
    EMBEDDED_DATA_DIR,
    load_anime,
    load_dataset,
    load_movielens,
    load_table,
    resolve_dataset,
)
from cinesync.data.splits import (
    Split,
    filter_interactions,
    leave_last_out,
    random_split,
    split_dataset,
    temporal_split,
)

__all__ = [
    "DATA_DIR_ENV",
    "EMBEDDED_DATA_DIR",
    "Dataset",
    "IdMap",
    "Split",
    "build_dataset",
    "filter_interactions",
    "leave_last_out",
    "load_anime",
    "load_dataset",
    "load_movielens",
    "load_table",
    "random_split",
    "resolve_dataset",
    "split_dataset",
    "temporal_split",
]
