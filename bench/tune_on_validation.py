"""Grid search on validation only, then one test evaluation of the chosen configuration.

Each grid point is fitted on train and scored on validation (train items excluded); iterative models
early-stop on validation. Only the configuration with the best validation metric is refitted on
train + validation (iterative models for its best epoch count) and evaluated on test, so the test split
never influences a choice.

Run::

    .venv/bin/python bench/tune_on_validation.py bpr_mf \
        --grid '{"dim": [64, 128], "l2": [0.001, 0.003, 0.01]}' \
        --training-grid '{"learning_rate": [0.05, 0.1]}' [--dataset ml-100k --data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from typing import Any

from cinesync import registry
from cinesync.evaluation import evaluate
from cinesync.manifest import EvaluationProtocol, ModelSpec
from cinesync.suite import prepare_data, train_and_evaluate
from cinesync.train.trainer import TrainerConfig


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = sorted(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("component")
    parser.add_argument("--grid", default="{}", help="JSON: model parameter -> list of values")
    parser.add_argument("--training-grid", default="{}", help="JSON: trainer option -> list of values")
    parser.add_argument("--dataset", default="ml-latest-small")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--metric", default="ndcg@10")
    parser.add_argument(
        "--seeds", type=int, default=1, help="Test the chosen configuration with this many seeds"
    )
    args = parser.parse_args()

    protocol = EvaluationProtocol.model_validate({"dataset": args.dataset, "metrics": [args.metric, "hr@10"]})
    split = prepare_data(protocol, args.data_dir)
    assert split.valid is not None
    rows = []
    for params in grid_points(json.loads(args.grid)):
        for training in grid_points(json.loads(args.training_grid)):
            model = registry.build("recommender", args.component, **params)
            started = time.perf_counter()
            model.fit(split.train, validation=split.valid, trainer=TrainerConfig(progress=False, **training))
            seconds = time.perf_counter() - started
            score = evaluate(model, split.valid, metrics=[args.metric]).metrics[args.metric]
            rows.append({"params": params, "training": training, "validation": score, "seconds": seconds})
            print(
                f"{json.dumps(params)} {json.dumps(training)} validation {args.metric} {score:.4f} ({seconds:.1f}s)"
            )
    best = max(rows, key=lambda row: row["validation"])
    print(f"chosen on validation: {json.dumps(best['params'])} {json.dumps(best['training'])}")
    for seed in range(args.seeds):
        training = {**best["training"], "seed": seed}
        spec = ModelSpec(component=args.component, params=best["params"], training=training)
        _, result = train_and_evaluate(spec, split, protocol, progress=False)
        print(
            f"its test metrics (seed {seed}): {json.dumps({k: round(v, 4) for k, v in result.metrics.items()})}"
        )


if __name__ == "__main__":
    main()
