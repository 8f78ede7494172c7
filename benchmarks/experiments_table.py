"""Runs tutorial experiments end to end and prints their results as a markdown table.

    python benchmarks/experiments_table.py --out runs/table [--only imdb_lstm,imdb_gru]
        [--data-dir DIR] [--manual-dir DIR]

Each experiment runs with its own config (early stopping decides the epochs) into
``<out>/<name>``; the table has best epoch, epochs run, val/test accuracy and wall time, and
``<out>/table.json`` keeps the metrics.
"""

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.__main__ import recipes  # noqa: E402
from rnnjax.experiment import run  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--only", help="comma-separated experiment names")
    parser.add_argument("--data-dir")
    parser.add_argument("--manual-dir")
    parser.add_argument(
        "--prepare", action="store_true", help="allow preparing a dataset in --data-dir"
    )
    args = parser.parse_args()
    wanted = set(args.only.split(",")) if args.only else None
    rows = []
    for name, experiment in recipes():
        if wanted and name not in wanted:
            continue
        started = time.perf_counter()
        metrics = run(
            experiment,
            os.path.join(args.out, name),
            data_dir=args.data_dir,
            manual_dir=args.manual_dir,
            prepare=args.prepare or None,
            quiet=True,
        )
        metrics["wall_seconds"] = time.perf_counter() - started
        rows.append(metrics)
        print(
            f"{name}: best epoch {metrics['best_epoch']}, val {metrics['val_accuracy']:.4f}, "
            f"test {metrics['test_accuracy']:.4f}, {metrics['wall_seconds']:.0f}s",
            flush=True,
        )
    with open(os.path.join(args.out, "table.json"), "w") as f:
        json.dump(
            {
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                "rows": rows,
            },
            f,
            indent=1,
        )
    print("\n| experiment | best epoch | epochs run | val acc | test acc | wall s |")
    print("|---|---|---|---|---|---|")
    for m in rows:
        print(
            f"| {m['experiment']} | {m['best_epoch']} | {m['epochs_run']} | "
            f"{m['val_accuracy']:.4f} | {m['test_accuracy']:.4f} | {m['wall_seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
