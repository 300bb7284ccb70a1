"""Print a suite's ``--json`` results as the Markdown table the model pages show.

Usage::

    .venv/bin/cinesync run registry/suites/sequential-ml100k.toml --data-dir ../shared/data --json out.json
    .venv/bin/python bench/results_table.py out.json

Columns: NDCG@10, HR@10, Recall@20, training seconds (every fit of the run: validation phase and refit),
seconds per training epoch (the refit's, validation excluded; blank for models without epochs) and learned
parameters. The best value of each quality column is in bold.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = ("ndcg@10", "hr@10", "recall@20")


def main() -> None:
    results = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))["results"]
    best = {column: max(row[column] for row in results.values()) for column in COLUMNS}
    print("| model | NDCG@10 | HR@10 | Recall@20 | train s | s / epoch | parameters |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, row in results.items():
        cells = [f"**{row[c]:.4f}**" if row[c] == best[c] else f"{row[c]:.4f}" for c in COLUMNS]
        per_epoch = row.get("seconds_per_epoch")
        epoch_cell = f"{per_epoch:.1f}" if per_epoch else ""
        print(
            f"| {name} | {' | '.join(cells)} | {row['train_seconds']:.1f} | {epoch_cell} | {row['n_parameters']:,} |"
        )


if __name__ == "__main__":
    main()
