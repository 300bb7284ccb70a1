"""Time one training epoch of our SASRec against RecBole 1.2.1's SASRec on ml-100k, same machine, one run.

RecBole is a benchmark-only dependency, never one of the project's: install it in a throwaway environment
first (it needs numpy < 2 and pandas < 2.2, and reloads its own checkpoints only with
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, which this script sets)::

    python3 -m venv /tmp/recbole-venv
    /tmp/recbole-venv/bin/pip install torch==2.13.0 'numpy<2' 'pandas<2.2' recbole==1.2.1
    .venv/bin/python bench/sequential_vs_recbole.py --recbole-python /tmp/recbole-venv/bin/python \\
        --data-dir ../shared/data --epochs 2

Both sides use the same hyper-parameters (RecBole's SASRec defaults: 2 blocks, 2 heads, 64 dimensions,
feed-forward 256, dropout 0.5, 50 most recent items, Adam at 1e-3, full-softmax cross-entropy) and the same
protocol (ml-100k, every rating an interaction, leave-last-out by time, full ranking, test users' histories
including their validation item). One epoch is one pass over every training interaction as a next-item target
on both sides: RecBole feeds each prefix of each sequence as its own example (about 97,000 per epoch, batches
of 2,048), ours feeds windows of 51 items and trains every position (about 2,000 windows, batches of 128).
RecBole trains on train and tests; ours trains on train + validation for the same number of epochs and tests
(our protocol's refit). The script prints per-epoch seconds, test NDCG@10 after the epochs, and the speed ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

RECBOLE_RUNNER = textwrap.dedent(
    """
    import json, sys, time
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    data_path, epochs, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    import torch
    torch.set_num_threads(threads)
    config = Config(model="SASRec", dataset="ml-100k", config_dict={
        "data_path": data_path, "checkpoint_dir": data_path + "/saved",
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "train_neg_sample_args": None, "loss_type": "CE",
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "metrics": ["NDCG", "Hit"], "topk": [10], "valid_metric": "NDCG@10",
        "MAX_ITEM_LIST_LENGTH": 50, "hidden_size": 64, "n_layers": 2, "n_heads": 2, "inner_size": 256,
        "hidden_dropout_prob": 0.5, "attn_dropout_prob": 0.5, "learning_rate": 0.001,
        "train_batch_size": 2048, "eval_batch_size": 4096, "epochs": epochs,
        "device": "cpu", "use_gpu": False, "show_progress": False, "seed": 0, "reproducibility": True,
    })
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    model = SASRec(config, train.dataset).to(config["device"])
    trainer = Trainer(config, model)
    seconds = []
    for epoch in range(epochs):
        started = time.perf_counter()
        trainer._train_epoch(train, epoch, show_progress=False)
        seconds.append(time.perf_counter() - started)
    result = trainer.evaluate(test, load_best_model=False, show_progress=False)
    print("RESULT " + json.dumps({"epoch_seconds": seconds, "ndcg@10": float(result["ndcg@10"]),
                                  "hr@10": float(result["hit@10"]), "examples": len(train.dataset)}))
    """
)


def write_recbole_data(source: Path, target: Path) -> None:
    """ml-100k's u.data as RecBole's atomic .inter file (every rating an interaction)."""
    (target / "ml-100k").mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for line in (source / "ml-100k" / "u.data").read_text().splitlines():
        if line.strip():
            lines.append("\t".join(line.split()))
    (target / "ml-100k" / "ml-100k.inter").write_text("\n".join(lines) + "\n")


def run_recbole(python: str, data_dir: Path, epochs: int, threads: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        write_recbole_data(data_dir, root)
        (root / "runner.py").write_text(RECBOLE_RUNNER)
        environment = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "OMP_NUM_THREADS": str(threads)}
        done = subprocess.run(
            [python, str(root / "runner.py"), str(root), str(epochs), str(threads)],
            capture_output=True,
            text=True,
            cwd=root,
            env=environment,
        )
        for line in done.stdout.splitlines():
            if line.startswith("RESULT "):
                return dict(json.loads(line.removeprefix("RESULT ")))
        raise SystemExit(f"RecBole failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def run_ours(data_dir: Path, epochs: int, threads: int) -> dict[str, float]:
    import torch

    from cinesync.evaluation import evaluate
    from cinesync.manifest import EvaluationProtocol
    from cinesync.suite import prepare_data
    from cinesync.train.trainer import TrainerConfig
    from cinesync_plugins.recommenders.sasrec import SASRec

    torch.set_num_threads(threads)
    protocol = EvaluationProtocol.model_validate({"dataset": "ml-100k", "metrics": ["ndcg@10", "hr@10"]})
    split = prepare_data(protocol, str(data_dir))
    model = SASRec(max_length=50, dim=64, layers=2, heads=2, dropout=0.5, loss="softmax")
    trainer = TrainerConfig(
        epochs=epochs, batch_size=128, learning_rate=1e-3, early_stopping_metric=None, progress=False
    )
    model.fit(split.train_valid, trainer=trainer)
    assert model.training_report is not None
    seconds = [record["seconds"] for record in model.training_report.history]
    started = time.perf_counter()
    result = evaluate(model, split.test, metrics=["ndcg@10", "hr@10"], history=split.train_valid)
    return {
        "epoch_seconds": seconds,
        "ndcg@10": result.metrics["ndcg@10"],
        "hr@10": result.metrics["hr@10"],
        "evaluation_seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recbole-python", required=True, help="python of the throwaway RecBole environment")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--epochs", type=int, default=2, help="epochs each side trains (and is timed)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on each side")
    parser.add_argument(
        "--only-ours-epochs",
        type=int,
        default=0,
        help="skip RecBole; train ours for this many epochs with the same settings and print its test NDCG@10 "
        "(to compare at equal wall-clock time with a RecBole run measured before)",
    )
    args = parser.parse_args()
    if args.only_ours_epochs:
        ours = run_ours(args.data_dir, args.only_ours_epochs, args.threads)
        total = sum(ours["epoch_seconds"])  # type: ignore[arg-type]
        print(
            f"ours, {args.only_ours_epochs} epochs in {total:.1f} s: NDCG@10 {ours['ndcg@10']:.4f}, "
            f"HR@10 {ours['hr@10']:.4f}"
        )
        return
    ours = run_ours(args.data_dir, args.epochs, args.threads)
    print("ours", json.dumps(ours), flush=True)
    theirs = run_recbole(args.recbole_python, args.data_dir, args.epochs, args.threads)
    print("recbole", json.dumps(theirs), flush=True)
    ours_epoch = sum(ours["epoch_seconds"]) / len(ours["epoch_seconds"])  # type: ignore[arg-type]
    theirs_epoch = sum(theirs["epoch_seconds"]) / len(theirs["epoch_seconds"])  # type: ignore[arg-type]
    print()
    print(f"| implementation | s / epoch | NDCG@10 after {args.epochs} epochs | HR@10 |")
    print("| --- | --- | --- | --- |")
    print(f"| RecBole 1.2.1 SASRec | {theirs_epoch:.1f} | {theirs['ndcg@10']:.4f} | {theirs['hr@10']:.4f} |")
    print(f"| cinesync sasrec | {ours_epoch:.1f} | {ours['ndcg@10']:.4f} | {ours['hr@10']:.4f} |")
    print(f"\nours is {theirs_epoch / ours_epoch:.1f}x faster per epoch (python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
