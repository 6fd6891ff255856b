"""Storage benchmark: commit 1M ``step_labels`` rows as shards, then GROUP BY them through the catalog.

Goals: writing (cast + Parquet + fsync + rename + manifest) <= 5 s; a per-problem mean value over the 1M rows
<= 0.3 s. Prints measured times and time/goal ratios (< 1 meets the goal); also the list-of-dicts write
path, measured on one shard in a separate temp dir, for writers that do not build Arrow tables. Runs in a temp dir.

    PYTHONPATH=. python -m benchmarks.storage [--rows 1000000] [--shards 8]   (as a module: run as a file,
    this script would shadow the storage package)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import pyarrow as pa

from storage.catalog import Catalog
from storage.shards import ShardWriter

WRITE_GOAL_S = 5.0
GROUP_BY_GOAL_S = 0.3
STEPS_PER_PROBLEM = 40  # labeled nodes per problem: ~5 solutions x 8 steps
STRATEGIES = ["linear", "binary", "adaptive", "mcts"]
ROLLOUT_COUNTS = [4, 8, 16]
QUERY_REPEATS = 5
GROUP_BY = "SELECT problem_id, avg(value) AS mean_value, count(*) AS n FROM step_labels GROUP BY problem_id"


def hex_ids(rng: np.random.Generator, n: int) -> pa.Array:
    """``n`` random 16-hex-digit ids, like ``node_id``/``problem_id``."""
    return pa.array(np.char.mod("%016x", rng.integers(0, 2**63, n, dtype=np.int64)).astype(object), pa.string())


def step_labels(rng: np.random.Generator, rows: int) -> pa.Table:
    problems = hex_ids(rng, max(rows // STEPS_PER_PROBLEM, 1))
    n = rng.choice(ROLLOUT_COUNTS, rows).astype(np.int32)
    n_correct = rng.binomial(n, rng.beta(2, 2, rows)).astype(np.int32)
    value = n_correct / n
    return pa.table({
        "node_id": hex_ids(rng, rows),
        "problem_id": problems.take(pa.array(np.sort(rng.integers(0, len(problems), rows)))),
        "strategy": pa.array(rng.choice(STRATEGIES, rows).astype(object), pa.string()),
        "n": n,
        "n_correct": n_correct,
        "value": value,
        "hard": value > 0,
        "soft": value,
        "label_source": pa.array(np.where(rng.random(rows) < 0.9, "mc", "inferred").astype(object), pa.string()),
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=8)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    shard_rows = args.rows // args.shards
    shards = [step_labels(rng, shard_rows) for _ in range(args.shards)]
    dict_rows = step_labels(rng, shard_rows).to_pylist()

    with tempfile.TemporaryDirectory() as root:
        with ShardWriter(root, "bench") as writer:
            t0 = time.perf_counter()
            for i, table in enumerate(shards):
                writer.commit(f"labels-{i:05d}", {"step_labels": table})
            write_s = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as other, ShardWriter(other, "bench-dicts") as writer:
            t0 = time.perf_counter()
            writer.commit("labels-dicts", {"step_labels": dict_rows})
            dict_s = time.perf_counter() - t0

        with Catalog(root) as cat:
            t0 = time.perf_counter()
            cat.refresh()
            refresh_s = time.perf_counter() - t0
            times = []
            for _ in range(QUERY_REPEATS):
                t0 = time.perf_counter()
                result = cat.sql(GROUP_BY)
                times.append(time.perf_counter() - t0)
            total = cat.sql("SELECT count(*) AS n FROM step_labels")["n"][0].as_py()

    written = shard_rows * args.shards
    query_s = statistics.median(times)
    print(f"rows written (Arrow input): {written:,} in {args.shards} shards; catalog total {total:,}")
    print(f"write  {write_s:6.3f} s  goal {WRITE_GOAL_S} s  ratio {write_s / WRITE_GOAL_S:.2f}")
    print(f"  list-of-dicts input: {shard_rows:,} rows in {dict_s:.3f} s "
          f"({dict_s / write_s * args.shards:.1f}x the Arrow path per row)")
    print(f"group by {query_s:6.3f} s  goal {GROUP_BY_GOAL_S} s  ratio {query_s / GROUP_BY_GOAL_S:.2f}  "
          f"(median of {QUERY_REPEATS}; first {times[0]:.3f} s; {result.num_rows:,} groups)")
    print(f"catalog refresh {refresh_s:.3f} s")


if __name__ == "__main__":
    main()
