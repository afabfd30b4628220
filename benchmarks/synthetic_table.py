"""A large synthetic table with a natural "user" column, for the scale benchmark's 100,000
clients (no dataset at hand has enough samples: MNIST's 59,000 private samples are fewer
than one per client).

Every user draws a few favourite classes (natural label skew) and rows around the class
centres with a user-specific shift, so a model can learn the task and users differ.

    python -m benchmarks.synthetic_table /tmp/users.parquet --users 101000 --rows-per-user 10
    python -m benchmarks.scale --points 100000:0.001 --dataset parquet:/tmp/users.parquet \\
        --model mlp --partition-by user
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def make_table(
    users: int, rows_per_user: int, features: int, classes: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Columns ``f0..f{features-1}`` (float32), ``label`` (int64) and ``user`` (int64)."""
    rng = np.random.default_rng(seed)
    n = users * rows_per_user
    centres = rng.normal(0.0, 2.0, (classes, features)).astype(np.float32)
    user = np.repeat(np.arange(users, dtype=np.int64), rows_per_user)
    favourites = rng.integers(0, classes, (users, 2))
    pick = rng.integers(0, 2, n)
    label = np.where(
        rng.random(n) < 0.8, favourites[user, pick], rng.integers(0, classes, n)
    ).astype(np.int64)
    shift = rng.normal(0.0, 0.5, (users, features)).astype(np.float32)
    x = centres[label] + shift[user] + rng.normal(0.0, 1.0, (n, features)).astype(np.float32)
    columns = {f"f{j}": x[:, j] for j in range(features)}
    columns.update(label=label, user=user)
    return columns


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.synthetic_table")
    parser.add_argument("out", type=Path, help="a .parquet or .csv file")
    parser.add_argument("--users", type=int, default=101_000)
    parser.add_argument("--rows-per-user", type=int, default=10)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = pa.table(
        make_table(args.users, args.rows_per_user, args.features, args.classes, args.seed)
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.suffix == ".csv":
        pacsv.write_csv(table, args.out)
    else:
        pq.write_table(table, args.out)
    print(f"{args.out}: {table.num_rows} rows, {args.users} users")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
