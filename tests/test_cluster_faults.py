"""Fault tolerance on a real 3-node local Ray cluster: a killed actor and a removed node lose no result."""

from __future__ import annotations

from collections import Counter

import ray

from cluster.actors import ActorSpec
from cluster.pool import EnginePool, PoolConfig, run_programs_async
from cluster.sim_engine import SimEngine
from search.program import run_programs
from tests.cluster_fixtures import (
    programs,
    prompts,
    ray_cluster,  # noqa: F401  (a pytest fixture, used by name)
)

SLOW_SIM = {"latency_s": 0.05}  # per engine call: the run lasts long enough to be hit mid-way
SPEC = ActorSpec(backend="sim", engine=SLOW_SIM, num_cpus=1)
CONFIG = PoolConfig(max_retries=5, probe_interval_s=0.2)


def _run_with_fault(pool: EnginePool, fault, n_problems: int = 16) -> tuple[dict, Counter]:
    """Run ``n_problems`` programs, calling ``fault()`` once after the third problem finishes."""
    ps = prompts(n_problems, seed=11)
    finished: Counter = Counter()

    def on_done(key, _):
        finished[key] += 1
        if sum(finished.values()) == 3:
            fault()

    outcome = run_programs_async(programs(ps, depth=4), pool, on_done=on_done, max_active=8)
    assert not outcome.failed
    want = run_programs(dict(programs(ps, depth=4)), SimEngine().generate)
    assert outcome.results == want
    return outcome.results, finished


def test_killed_actor_is_restarted_and_every_result_arrives_once(ray_cluster):  # noqa: F811
    pool = EnginePool.launch(SPEC, 2, CONFIG)
    try:
        _, finished = _run_with_fault(pool, lambda: ray.kill(pool.actors[0], no_restart=False))
        assert set(finished.values()) == {1} and len(finished) == 16
        assert pool.stats()["retried"] > 0  # the kill really hit calls in flight
    finally:
        pool.shutdown()


def test_removing_a_worker_node_mid_run_completes_the_run(ray_cluster):  # noqa: F811
    pool = EnginePool.launch(SPEC, 2, CONFIG)
    try:
        nodes = {n.node_id: n for n in ray_cluster.worker_nodes}
        stats = ray.get([a.stats.remote() for a in pool.actors])
        victim = next(nodes[s["node_id"]] for s in stats if s["node_id"] in nodes)
        _, finished = _run_with_fault(pool, lambda: ray_cluster.remove_node(victim))
        assert set(finished.values()) == {1} and len(finished) == 16
        assert pool.stats()["retried"] > 0
    finally:
        pool.shutdown()
