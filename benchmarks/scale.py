"""Scale benchmark: a 100,000-problem sim run on bounded memory, search workers, engine busy share.

Every figure comes from real ``tracemill run`` processes (the driver, the local Ray it starts, the engine
actors and the search workers), measured side by side in one invocation:

1. Memory: the same sim config at ``--small`` (10,000) and ``--large`` (100,000) problems; the summed RSS of
   the driver's whole process tree (every Ray process of the run descends from it) is sampled every 0.2 s.
   Prints wall, peak RSS, files written, a DuckDB GROUP BY over all the large run's ``step_labels``, and the
   RSS ratio large / small (goal <= 1.25).
2. Latency-bound: an engine whose every call costs ``--call-latency-s`` (a batched accelerator below
   saturation: a step costs the same whatever the batch) and whose calls overlap as with continuous batching
   (``continuous = true``: a call never waits for a batch in progress), 1 vs 2 search workers, 64-problem
   shards; the speed-up of the search phase (goal >= 1.8x: each worker keeps its own programs in flight).
3. Engine busy share: ``--small`` problems on 2 engine actors that cost ``--request-latency-s`` per request
   (more than the workers ask for at zero latency, so the engines are the bottleneck, as GPU engines are):
   union busy time / (search wall x 2) (goal >= 80%: the workers keep the engines fed).
4. Zero-latency node expansions (engine requests) per second per search worker, from the large run.

Runs use ``mining.kinds = []`` and no datasets: mining reads the run back into memory and is not the search
this benchmark is about. ``--small``/``--large`` scale everything down for a quick look.

    python -m benchmarks.scale                                 # the full run
    python -m benchmarks.scale --small 1000 --large 10000      # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from storage.catalog import Catalog

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "sim.toml"
# a cheap sim problem (1-2 operations, 2 solutions, binary search for the first error): the benchmark is
# about how the run scales, not about label quality
BASE = {"problems.mix": {1: 0.5, 2: 0.5}, "sampling.n_solutions": 2, "labeling.strategy": "binary",
        "labeling.options": {}, "mining.kinds": [], "mining.datasets": False, "storage.shard_size": 512}


def run(root: Path, run_id: str, n: int, **sets: Any) -> dict[str, Any]:
    """One ``tracemill run`` in a process of its own; its wall time, peak summed RSS and stored stats."""
    args = [sys.executable, "-m", "pipelines.cli", "run", "-c", str(CONFIG), "--no-progress", "--no-report",
            "--run-id", run_id]
    for key, value in {**BASE, "problems.n": n, "storage.root": str(root), **sets}.items():
        args += ["--set", f"{key}={toml(value)}"]
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(0.2)
    wall = time.perf_counter() - start
    out = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise RuntimeError(f"run {run_id} failed ({proc.returncode}):\n{out[-3000:]}")
    run_dir = root / "runs" / run_id
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    with Catalog(root, save=False) as cat:
        stats = json.loads(cat.sql("SELECT stats_json FROM runs", run_id=run_id).column(0)[0].as_py())
    return {"wall": wall, "peak_rss": peak, "files": len(files), "bytes": sum(p.stat().st_size for p in files),
            **stats}


def toml(value: Any) -> str:
    """A ``--set`` value (TOML): inline tables for dicts, JSON for the rest (a subset of TOML)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def tree_rss(pid: int) -> int:
    """Summed RSS of a process and all its descendants (0 once it is gone)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def group_by(root: Path, run_id: str) -> tuple[float, int, list[dict]]:
    start = time.perf_counter()
    with Catalog(root, save=False) as cat:
        rows = cat.sql("SELECT label_source, count(*) AS labels, round(avg(value), 3) AS mean_value "
                       "FROM step_labels GROUP BY 1 ORDER BY 1", run_id=run_id).to_pylist()
    return time.perf_counter() - start, sum(r["labels"] for r in rows), rows


def mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2, help="search workers of the memory runs")
    parser.add_argument("--latency-problems", type=int, default=4_000)
    parser.add_argument("--call-latency-s", type=float, default=0.1)
    parser.add_argument("--request-latency-s", type=float, default=0.01)
    parser.add_argument("--parts", default="memory,latency,busy", help="which parts to run (comma-separated)")
    parser.add_argument("--root", type=Path, default=None, help="data root (default: a temporary folder)")
    args = parser.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="tracemill-scale-"))
    began = time.perf_counter()
    print(f"# data root {root}; sim, mix 1-2 ops, 2 solutions, binary labels, {args.workers} search workers")

    parts = set(args.parts.split(","))
    if "memory" in parts:
        memory(root, args)
    if "latency" in parts:
        latency(root, args)
    if "busy" in parts:
        busy(root, args)
    print(f"# total {time.perf_counter() - began:.0f}s")


def memory(root: Path, args: argparse.Namespace) -> None:
    print("# 1. memory: the same config at two sizes")
    sized = {}
    for n in (args.small, args.large):
        r = sized[n] = run(root, f"mem-{n}", n, **{"ray.search_workers": args.workers})
        print(f"problems={n:>7,}  wall={r['wall']:.0f}s (search {r['search_wall_s']:.0f}s)  "
              f"peak RSS={mb(r['peak_rss'])}  files={r['files']:,} ({mb(r['bytes'])})  "
              f"problems/s={n / r['search_wall_s']:,.0f}")
    seconds, labels, rows = group_by(root, f"mem-{args.large}")
    print(f"duckdb GROUP BY over {labels:,} step_labels: {seconds:.2f}s  {rows}")
    small, large = sized[args.small], sized[args.large]
    print(f"RSS ratio {args.large:,} / {args.small:,} problems: {large['peak_rss'] / small['peak_rss']:.2f} "
          f"(goal <= 1.25)")
    slope = (large["search_wall_s"] - small["search_wall_s"]) / (args.large - args.small)
    print(f"search wall slope: {slope * 1e3:.2f} ms/problem -> 1,000,000 problems ~ "
          f"{(small['search_wall_s'] + slope * (1_000_000 - args.small)) / 3600:.1f} h on this machine")

    print("# 4. zero-latency node expansions (engine requests) per second per search worker")
    rate = large["engine_requests"] / large["search_wall_s"]
    print(f"{rate:,.0f} expansions/s over {args.workers} workers = {rate / args.workers:,.0f}/s per worker")


def latency(root: Path, args: argparse.Namespace) -> None:

    print(f"# 2. latency-bound: {args.call_latency_s * 1e3:.0f} ms per engine call, "
          f"{args.latency_problems:,} problems, 1 -> 2 search workers")
    lat = {}
    for w in (1, 2):
        r = lat[w] = run(root, f"lat-{w}", args.latency_problems, **{
            "ray.search_workers": w, "storage.shard_size": 64, "engine.options": {"latency_s": args.call_latency_s, "continuous": True}})
        print(f"search_workers={w}  search wall={r['search_wall_s']:.1f}s")
    print(f"speed-up 1 -> 2 search workers: {lat[1]['search_wall_s'] / lat[2]['search_wall_s']:.2f}x "
          f"(goal >= 1.8x)")


def busy(root: Path, args: argparse.Namespace) -> None:

    print(f"# 3. engine busy share: {args.small:,} problems, 2 engine actors at "
          f"{args.request_latency_s * 1e3:.1f} ms per request")
    r = run(root, "busy", args.small, **{"ray.search_workers": args.workers, "storage.shard_size": 64,
                                         "engine.options": {"latency_per_request_s": args.request_latency_s}})
    share = r["engine_busy_s"] / (r["search_wall_s"] * r["replicas"])
    print(f"engines busy {r['engine_busy_s']:.1f}s of {r['replicas']} x {r['search_wall_s']:.1f}s = {share:.0%} "
          f"(goal >= 80%); per actor {[round(s, 1) for s in r['engine_busy_per_actor_s']]}")


if __name__ == "__main__":
    main()
