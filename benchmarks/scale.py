"""Cluster scaling benchmark: engine actors vs wall time, driver throughput, orchestration overhead.

1. Latency-bound: a sim engine that costs ``per_request_s`` per request (a compute-bound engine) behind
   1, 2 and 4 actors; prints the speed-up over 1 actor (goal: >= 1.8x at 2 actors).
2. Zero latency: node expansions (requests) per second through driver -> pool -> actor -> back, next to
   the same programs driven in-process (goal: >= 5,000/s on 2 cores).
3. Orchestration overhead: wall time not spent inside engine calls (wall - busiest engine's time).

All numbers of one run are measured side by side, each the best of ``--repeats`` (a shared machine is
noisy); only ratios are meant to be compared across machines.

    PYTHONPATH=. python benchmarks/scale.py --problems 400
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import ray

from cluster.actors import ActorSpec
from cluster.pool import EnginePool, run_programs_async
from cluster.sim_engine import SimEngine
from search.program import run_programs
from tests.cluster_fixtures import programs, prompts

DEPTH = 4  # expansions per problem (a greedy step-by-step search)
SAMPLES = 2  # samples per expansion


def _best(repeats: int, num_actors: int, engine: dict[str, Any], ps: dict[str, str],
          max_active: int) -> dict[str, float]:
    return min((_run(num_actors, engine, ps, max_active) for _ in range(repeats)), key=lambda r: r["wall"])


def _run(num_actors: int, engine: dict[str, Any], ps: dict[str, str], max_active: int) -> dict[str, float]:
    pool = EnginePool.launch(ActorSpec(backend="sim", engine=engine, num_cpus=0.01), num_actors)
    try:
        ray.get([a.stats.remote() for a in pool.actors])  # wait until every engine is built
        start = time.perf_counter()
        outcome = run_programs_async(programs(ps, depth=DEPTH, n=SAMPLES), pool, max_active=max_active)
        wall = time.perf_counter() - start
        assert not outcome.failed and len(outcome.results) == len(ps)
        busy = max(s["engine_s"] for s in pool.actor_stats() if s is not None)
        return {"wall": wall, "requests": pool.stats()["completed"], "engine": busy}
    finally:
        pool.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--per-request-s", type=float, default=0.002, help="latency-bound engine cost")
    parser.add_argument("--max-active", type=int, default=256, help="problems in flight")
    args = parser.parse_args()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ps = prompts(args.problems, seed=0)

    print(f"# latency-bound: {args.per_request_s * 1e3:.1f} ms/request, {args.problems} problems x {DEPTH}")
    slow = {"latency_per_request_s": args.per_request_s}
    base = None
    for n in (1, 2, 4):
        r = _best(args.repeats, n, slow, ps, args.max_active)
        base = base or r["wall"]
        print(f"actors={n}  wall={r['wall']:.2f}s  speedup={base / r['wall']:.2f}x  "
              f"overhead={(r['wall'] - r['engine']) / r['wall']:.0%}")

    print("# zero latency: expansions/s")
    ps_fast = prompts(args.problems * 3, seed=1)
    start = time.perf_counter()
    run_programs(dict(programs(ps_fast, depth=DEPTH, n=SAMPLES)), SimEngine().generate)
    local = time.perf_counter() - start
    for n in (1, 2):
        r = _best(args.repeats, n, {}, ps_fast, args.max_active)
        print(f"actors={n}  {r['requests'] / r['wall']:,.0f} expansions/s  "
              f"(in-process lockstep: {r['requests'] / local:,.0f}/s; ratio {local / r['wall']:.2f})  "
              f"orchestration overhead={r['wall'] - r['engine']:.2f}s of {r['wall']:.2f}s "
              f"({(r['wall'] - r['engine']) / r['wall']:.0%})")
    ray.shutdown()


if __name__ == "__main__":
    main()
