"""Latency an ensemble adds over running its members, from a saved ensemble artifact.

Run::

    .venv/bin/python bench/ensemble_latency.py runs/movie-ml100k/artifacts/movie-ml100k [--users 943] [--repeats 5]

For the same users (the first ``--users`` of the artifact, in batches of 1,024) it times (a) every member's
``score`` call, summed: what running the members costs, and (b) the ensemble's ``recommend(users, k=10)``:
member scores, fusion, seen-item exclusion, top 10, calibrated confidences and contributing members. It prints
the median of ``--repeats`` runs of each and the overhead ``b / a - 1``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import cinesync
from cinesync.ensemble import Ensemble


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("artifact")
    parser.add_argument("--users", type=int, default=0, help="How many users (default: all).")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1024, help="Users per scoring call (both sides).")
    args = parser.parse_args()
    ensemble = cinesync.load(args.artifact)
    if not isinstance(ensemble, Ensemble):
        raise SystemExit(f"{args.artifact} is not an ensemble artifact")
    n_users = args.users or ensemble.n_users
    assert ensemble.users is not None
    ids = ensemble.users.lookup(range(n_users))
    index = torch.arange(n_users)
    batch = args.batch_size

    def members() -> None:
        with torch.no_grad():
            for start in range(0, n_users, batch):
                for member in ensemble.members.values():
                    member.score(index[start : start + batch])

    def fused() -> None:
        ensemble.recommend(ids, k=args.k, batch_size=batch)

    timings: dict[str, list[float]] = {"members": [], "ensemble": []}
    fused()  # warm-up (first calls allocate)
    for _ in range(args.repeats):
        for name, call in (("members", members), ("ensemble", fused)):
            started = time.perf_counter()
            call()
            timings[name].append(time.perf_counter() - started)
    members_s, ensemble_s = (statistics.median(timings[name]) for name in ("members", "ensemble"))
    print(f"{len(ensemble.members)} members, {n_users} users x {ensemble.n_items} items, k = {args.k}")
    print(f"members' scoring: {members_s:.3f} s; ensemble recommend: {ensemble_s:.3f} s")
    print(f"overhead: {100 * (ensemble_s / members_s - 1):.1f}%")


if __name__ == "__main__":
    main()
