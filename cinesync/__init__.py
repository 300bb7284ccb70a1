"""CineSync: plugin-based movie and TV recommenders.

Importing this package is cheap: no torch, no plugin code. The functions below import what they need when
called::

    import cinesync

    data = cinesync.load_dataset("ml-latest-small")
    split = cinesync.split(data, "leave_last_out")
    model = cinesync.build("ease", l2=100.0).fit(split.train_valid)
    print(cinesync.evaluate(model, split.test, metrics=["ndcg@10", "coverage@10"]).metrics)
    model.save("artifacts/ease")
    same = cinesync.load("artifacts/ease")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from cinesync.data.dataset import Dataset
    from cinesync.data.splits import Split
    from cinesync.evaluation.evaluator import EvaluationResult
    from cinesync.interfaces import Recommender

__all__ = ["__version__", "build", "evaluate", "list_components", "load", "load_dataset", "split"]


def build(component: str, /, kind: str = "recommender", **params: Any) -> Any:
    """Build the component ``component`` (an entry-point id such as ``"ease"`` or ``"acme.knn"``)."""
    from cinesync import registry

    return registry.build(kind, component, **params)


def load(path: str) -> Recommender:
    """Load a model artifact directory written by ``model.save(path)`` or ``cinesync run``."""
    from cinesync.serve.artifacts import load_artifact

    return load_artifact(path)


def load_dataset(name: str, data_dir: str | None = None, **options: Any) -> Dataset:
    """Load a dataset by name (``ml-latest-small`` ships inside cinesync) or path."""
    from cinesync.data.loaders import load_dataset as _load_dataset

    return _load_dataset(name, data_dir, **options)


def split(dataset: Dataset, method: str = "leave_last_out", **options: Any) -> Split:
    """Split ``dataset`` into train / validation / test (see :mod:`cinesync.data.splits`)."""
    from cinesync.data.splits import split_dataset

    return split_dataset(dataset, method, **options)  # type: ignore[arg-type]


def evaluate(model: Recommender, test: Dataset, **options: Any) -> EvaluationResult:
    """Full-ranking evaluation of ``model`` on ``test`` (see :func:`cinesync.evaluation.evaluate`)."""
    from cinesync.evaluation.evaluator import evaluate as _evaluate

    return _evaluate(model, test, **options)


def list_components(kind: str | None = None) -> list[Any]:
    """Installed components, read from package metadata without importing them."""
    from cinesync.registry import list_components as _list

    return _list(kind)
