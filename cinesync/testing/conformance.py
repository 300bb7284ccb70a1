"""The conformance kit: checks every recommender (built-in or third-party) must pass.

Run it from a plugin's own tests::

    from cinesync.testing import check_recommender

    def test_my_model_conforms():
        check_recommender("acme.cooccurrence")

Each check raises ``AssertionError`` naming the component and what was wrong. The checks: default build,
config round-trip and unknown-parameter rejection, fit on a toy dataset, score shapes and finiteness,
recommendations (k per user, seen items excluded, ids in the caller's own ids), k larger than the catalogue,
unknown user and item ids, an empty user list, and save/load parity of scores.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from cinesync.data.dataset import Dataset, build_dataset


def toy_dataset(n_users: int = 24, n_items: int = 30, *, seed: int = 0) -> Dataset:
    """A small dataset with structure (two taste groups), timestamps, ratings, genres and string item ids.

    Every user has at least four interactions, so each split leaves training data for everyone.
    """
    generator = np.random.default_rng(seed)
    rows = []
    for user in range(n_users):
        group = user % 2
        preferred = np.arange(group, n_items, 2)
        chosen = generator.choice(preferred, size=min(len(preferred), 4 + user % 5), replace=False)
        for position, item in enumerate(chosen):
            rows.append((f"u{user}", f"m{item}", 1_000 + 10 * position + user, float(1 + (item + user) % 5)))
    frame = pd.DataFrame(rows, columns=["user", "item", "timestamp", "rating"])
    catalog = pd.DataFrame(
        {
            "title": [f"Movie {i}" for i in range(n_items)],
            "year": [1990 + i % 30 for i in range(n_items)],
            "genres": [["Drama"] if i % 2 else ["Comedy", "Romance"] for i in range(n_items)],
            "type": ["movie"] * n_items,
        },
        index=pd.Index([f"m{i}" for i in range(n_items)], name="item_id"),
    )
    return build_dataset("toy", frame, catalog)


def random_dataset(n_users: int = 30, n_items: int = 20, density: float = 0.25, seed: int = 0) -> Dataset:
    """Users x items with each pair present with probability ``density``; every user and item appears."""
    generator = np.random.default_rng(seed)
    present = generator.random((n_users, n_items)) < density
    present[np.arange(n_users), np.arange(n_users) % n_items] = True
    present[np.arange(n_items) % n_users, np.arange(n_items)] = True
    users, items = np.nonzero(present)
    return build_dataset(
        "random", pd.DataFrame({"user": users, "item": items, "timestamp": np.arange(len(users))})
    )


def training_matrix(dataset: Dataset) -> np.ndarray:
    """The dataset's binary users x items matrix, dense: a reference to check models' arithmetic against."""
    matrix = np.zeros((dataset.n_users, dataset.n_items))
    users, items = dataset.user_item_pairs()
    matrix[users, items] = 1.0
    return matrix


@contextlib.contextmanager
def _registered(component: str | type) -> Iterator[tuple[str, type]]:
    """The (id, class) of ``component``, registering an unregistered class for the duration."""
    from cinesync import registry
    from cinesync.serve.artifacts import component_info_for

    if isinstance(component, str):
        yield component, registry.load("recommender", component)
        return
    info = component_info_for(component)
    if info is not None:
        yield info.id, component
        return
    component_id = f"conformance.{component.__name__.lower()}"
    with registry.override("recommender", component_id, component):
        yield component_id, component


def _fast_trainer() -> Any:
    from cinesync.train.trainer import TrainerConfig

    return TrainerConfig(epochs=2, batch_size=64, progress=False, early_stopping_metric=None)


def check_recommender(component: str | type, **params: Any) -> None:
    """Run every conformance check on ``component`` (an id or a Recommender class) built with ``params``."""
    import torch

    from cinesync import registry
    from cinesync.errors import NotFittedError, UnknownIdError
    from cinesync.interfaces import Recommender
    from cinesync.serve.artifacts import load_artifact, save_artifact

    with _registered(component) as (component_id, cls):
        label = f"{component_id} ({cls.__module__}.{cls.__qualname__})"

        def expect(condition: bool, message: str) -> None:
            if not condition:
                raise AssertionError(f"{label}: {message}")

        model = registry.build("recommender", component_id, **params)
        expect(isinstance(model, Recommender), "does not build a cinesync.interfaces.Recommender")

        # Config round-trip and strictness.
        rebuilt = type(model)(**model.get_params())
        expect(rebuilt.get_params() == model.get_params(), "rebuilding from get_params() changes the config")
        try:
            type(model)(**{**model.get_params(), "no_such_parameter_xyz": 1})
        except Exception:
            pass
        else:
            expect(
                False,
                "its Config accepts an unknown parameter; derive it from ComponentConfig (extra forbidden)",
            )

        # Not fitted yet: a clear error, not a crash deep inside.
        try:
            model.recommend(["u0"], k=3)
        except NotFittedError:
            pass
        else:
            expect(False, "recommend() before fit() must raise NotFittedError")

        data = toy_dataset()
        trainer = _fast_trainer() if model.iterative else None
        fitted = model.fit(data, trainer=trainer)
        expect(fitted is model, "fit() must return self")

        users = torch.arange(data.n_users)
        with torch.no_grad():
            scores = model.score(users)
        expect(tuple(scores.shape) == (data.n_users, data.n_items), f"score() shape {tuple(scores.shape)}")
        expect(bool(torch.isfinite(scores).all()), "score() returned non-finite values")
        subset = torch.tensor([0, 3, 5])
        with torch.no_grad():
            partial = model.score(users[:4], subset)
        expect(
            tuple(partial.shape) == (4, 3),
            f"score(users, items) shape {tuple(partial.shape)}, expected (4, 3)",
        )
        expect(
            torch.allclose(partial, scores[:4][:, subset], atol=1e-5),
            "score(users, items) disagrees with the matching columns of score(users)",
        )

        # Recommendations in the caller's ids, k per user, seen items excluded.
        some_users = ["u0", "u1", "u7"]
        result = model.recommend(some_users, k=5)
        expect(result.users == some_users, "recommend() must return the users it was asked for, in order")
        seen = data.interactions.groupby("user")["item"].apply(set).to_dict()
        for user, items, item_scores in zip(result.users, result.items, result.scores, strict=True):
            expect(len(items) == 5, f"user {user}: {len(items)} items for k=5")
            expect(
                all(isinstance(i, str) and i.startswith("m") for i in items), "items are not the source's ids"
            )
            user_index = int(data.users.index([user])[0])
            expect(
                not set(data.items.index(items).tolist()) & seen[user_index],
                f"user {user}: recommended items they already interacted with",
            )
            expect(
                item_scores == sorted(item_scores, reverse=True),
                f"user {user}: scores not in descending order",
            )

        # k beyond the catalogue: every unseen item, once.
        everything = model.recommend(["u0"], k=data.n_items + 10)
        unseen = data.n_items - len(seen[int(data.users.index(["u0"])[0])])
        expect(
            len(everything.items[0]) == unseen,
            f"k > catalogue gave {len(everything.items[0])} items, not {unseen}",
        )
        expect(len(set(everything.items[0])) == unseen, "k > catalogue repeated items")

        # Candidates restrict the ranking.
        restricted = model.recommend(["u0"], k=3, candidates=["m1", "m2", "m3", "m4"], exclude_seen=False)
        expect(set(restricted.items[0]) <= {"m1", "m2", "m3", "m4"}, "candidates were not respected")

        # Sessions: a model that scores anonymous sessions scores a user's own history as it scores the user.
        if model.supports_sessions:
            user_index = int(data.users.index(["u0"])[0])
            session = data.items.lookup(data.sequences()[user_index].tolist())
            by_session = model.recommend(sessions=[session], k=5)
            by_user = model.recommend(["u0"], k=5)
            expect(by_session.users == ["session-0"], "session results are not labelled session-0")
            expect(
                by_session.items == by_user.items,
                "recommend(sessions=[u0's history]) differs from recommend(['u0'])",
            )

        # Unknown ids and empty input.
        for bad_call, what in (
            (lambda: model.recommend(["no-such-user"], k=3), "an unknown user"),
            (lambda: model.recommend(["u0"], k=3, candidates=["no-such-item"]), "an unknown candidate item"),
        ):
            try:
                bad_call()
            except UnknownIdError:
                pass
            else:
                expect(False, f"{what} must raise UnknownIdError")
        empty = model.recommend([], k=3)
        expect(empty.items == [] and empty.users == [], "an empty user list must give empty recommendations")

        # Save / load parity.
        with tempfile.TemporaryDirectory() as directory:
            save_artifact(model, f"{directory}/model", name="conformance")
            loaded = load_artifact(f"{directory}/model")
            with torch.no_grad():
                reloaded_scores = loaded.score(users)
            expect(type(loaded) is type(model), "load_artifact() returned another class")
            expect(loaded.get_params() == model.get_params(), "params changed through save/load")
            expect(
                torch.allclose(reloaded_scores, scores, atol=1e-5),
                "scores differ after save/load (max abs difference "
                f"{float((reloaded_scores - scores).abs().max()):.3g})",
            )
            expect(
                loaded.recommend(some_users, k=5).items == result.items,
                "recommendations differ after save/load",
            )
