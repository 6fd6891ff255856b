"""Fault tolerance on a real 3-node local Ray cluster: a killed actor and a removed node lose no result."""

from __future__ import annotations

import time
from collections import Counter

import pytest
import ray

from cluster.actors import ActorSpec
from cluster.pool import EnginePool, PoolConfig
from cluster.sim_engine import SimEngine
from search.program import run_programs, run_programs_async
from tests.cluster_fixtures import arm_fault, capture_monitors, capture_pools, programs, prompts
from tests.gated_sim import GATED

WORKERS = 2  # worker nodes besides the head, 1 CPU each; every test starts with this many alive
pytestmark = pytest.mark.ray_cluster(workers=WORKERS)
SLOW_SIM = {"latency_s": 0.05}  # per engine call: the run lasts long enough to be hit mid-way
SPEC = ActorSpec(backend="sim", engine=SLOW_SIM, num_cpus=1)
CONFIG = PoolConfig(max_retries=5, probe_interval_s=0.2)


def _restore_workers(cluster) -> None:
    """Add nodes until ``WORKERS`` workers are alive, so no test depends on what an earlier one removed."""
    while len(cluster.worker_nodes) < WORKERS:
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()


def _run_with_fault(pool: EnginePool, fault, victim: int, n_problems: int = 16) -> tuple[dict, Counter]:
    """Run ``n_problems`` programs; ``fault()`` fires once mid-run, on a call in flight to actor ``victim``."""
    ps = prompts(n_problems, seed=11)
    finished: Counter = Counter()
    results: dict = {}

    def on_done(key, value):
        finished[key] += 1
        results[key] = value

    fired = arm_fault(pool, fault, after_completed=8, actor=victim)
    outcome = run_programs_async(programs(ps, depth=4), pool, on_done=on_done, max_active=8)
    assert fired and not outcome.failed
    want = run_programs(dict(programs(ps, depth=4)), SimEngine().generate)
    assert results == want
    return results, finished


def test_killed_actor_is_restarted_and_every_result_arrives_once(ray_cluster):
    _restore_workers(ray_cluster)
    pool = EnginePool.launch(SPEC, 2, CONFIG)
    try:
        _, finished = _run_with_fault(pool, lambda: ray.kill(pool.actors[0], no_restart=False), victim=0)
        assert set(finished.values()) == {1} and len(finished) == 16
        assert pool.stats()["retried"] > 0  # the kill really hit calls in flight
    finally:
        pool.shutdown()


def test_removing_a_worker_node_mid_run_completes_the_run(ray_cluster):
    _restore_workers(ray_cluster)
    pool = EnginePool.launch(SPEC, 2, CONFIG)
    try:
        nodes = {n.node_id: n for n in ray_cluster.worker_nodes}
        stats = ray.get([a.stats.remote() for a in pool.actors])
        victim = next(i for i, s in enumerate(stats) if s["node_id"] in nodes)  # an actor on a worker node
        node = nodes[stats[victim]["node_id"]]
        _, finished = _run_with_fault(pool, lambda: ray_cluster.remove_node(node), victim)
        assert set(finished.values()) == {1} and len(finished) == 16
        assert pool.stats()["retried"] > 0
    finally:
        pool.shutdown()


# ---- the whole pipeline under faults: the stored dataset equals an undisturbed run's ----------------------

def _committed(root, run_id: str) -> int:
    from storage.shards import committed_shards

    return len(committed_shards(root, run_id))


def _pipeline_with_fault(ray_cluster, tmp_path, monkeypatch, fault, hold=None):
    """Run the same sim config twice through ``pipelines.run.execute``: undisturbed, then with ``fault(pool)``
    called once the engines have answered some requests; check every table against the undisturbed run and
    return the faulted run's summary. The engines are gated sims: while the file ``hold`` holds ``*`` they
    answer nothing (without it they are the plain sim)."""
    hold = hold or tmp_path / "no-hold"
    import threading

    from pipelines.config import load_config
    from pipelines.run import execute
    from storage.catalog import Catalog

    _restore_workers(ray_cluster)
    pools = capture_pools(monkeypatch)
    root = tmp_path / "data"
    cfg = load_config(None, {"storage.root": str(root),
                             "engine": {"backend": GATED, "replicas": 2, "num_cpus": 0.5,
                                        "options": {"latency_s": 0.05, "hold": str(hold)}}, "problems.n": 24,
                             "problems.mix": {2: 0.5, 4: 0.5}, "storage.shard_size": 4,
                             "labeling.strategy": "binary", "mining.kinds": ["shortest"],
                             "mining.datasets": False, "ray.max_retries": 5})
    execute(cfg, run_id="undisturbed", progress=False, report=False)
    errors: list[BaseException] = []
    summaries: list = []
    runner = threading.Thread(target=lambda: _capture_errors(errors, summaries, execute, cfg, run_id="faulted",
                                                             progress=False, report=False))
    runner.start()
    while len(pools) < 2 or _answered(pools[-1]) < 10:  # mid-run: requests in flight
        assert runner.is_alive(), errors
        time.sleep(0.05)
    assert _committed(root, "faulted") == 0
    fault(pools[-1])
    runner.join(timeout=300)
    assert not errors and not runner.is_alive()
    tables = ("problems", "solutions", "nodes", "rollouts", "step_labels", "traces", "rejects")
    with Catalog(root) as cat:
        def count(t: str, run: str) -> int:
            return cat.sql(f"SELECT count(*) AS c FROM {t}", run_id=run).column("c")[0].as_py()

        assert {t: count(t, "faulted") for t in tables} == {t: count(t, "undisturbed") for t in tables}
        once = cat.sql("SELECT count(*) AS n, count(DISTINCT problem_id) AS d FROM problems", run_id="faulted")
        assert once.to_pylist() == [{"n": 24, "d": 24}]
        dup = cat.sql("SELECT count(*) AS c FROM (SELECT request_key, rollout_index FROM rollouts "
                      "GROUP BY 1, 2 HAVING count(*) > 1)", run_id="faulted")
        assert dup.column("c")[0].as_py() == 0
    return summaries[0]


def _answered(pool: EnginePool) -> int:
    """Requests the engines answered (the search workers route them; the driver's pool owns the actors)."""
    return sum(s["requests"] for s in pool.actor_stats() if s)


def _capture_errors(errors: list[BaseException], results: list, fn, *args, **kwargs) -> None:
    try:
        results.append(fn(*args, **kwargs))
    except BaseException as err:  # surfaced by the test thread
        errors.append(err)


def test_pipeline_with_a_killed_engine_actor_stores_the_same_rows_once(ray_cluster, tmp_path, monkeypatch):
    monitors = capture_monitors(monkeypatch)
    hold = tmp_path / "hold"

    def kill_once_its_work_was_sampled(pool: EnginePool) -> None:
        # the faulted run's monitor (the second) has counted tokens of engine 0's first incarnation
        while len(monitors) < 2 or monitors[1].totals()[0].usage.completion_tokens == 0:
            time.sleep(0.01)
        # hold every call: engine 0 finishes nothing more, so once the monitor's sample of it equals its own
        # count and calls wait in it, the kill loses exactly the held calls and nothing that was delivered
        hold.write_text("*\n")
        while True:
            live = ray.get(pool.actors[0].stats.remote())
            if live["in_flight"] > 0 and monitors[1].totals()[0].usage.completion_tokens == live["completion_tokens"]:
                break
            time.sleep(0.01)
        ray.kill(pool.actors[0], no_restart=False)
        hold.unlink()

    summary = _pipeline_with_fault(ray_cluster, tmp_path, monkeypatch, kill_once_its_work_was_sampled, hold)
    assert summary.meter.retried > 0  # the kill hit calls in flight
    # the restarted engine's earlier incarnation still counts: the engines generated at least what the pools
    # got back (more when the kill lost work in flight), and the timeline holds every counted token
    assert summary.engine_incarnations[0] == 2 and summary.engine_incarnations[1] == 1
    assert summary.engine_restarts == summary.stats()["engine_restarts"] == 1
    assert summary.engine_generated_tokens >= summary.meter.usage.completion_tokens > 0
    assert sum(map(sum, summary.engine_timeline["tokens"].values())) == summary.engine_generated_tokens


def test_pipeline_with_a_removed_worker_node_stores_the_same_rows_once(ray_cluster, tmp_path, monkeypatch):
    _restore_workers(ray_cluster)  # capacity for the actor that loses its node

    def remove_an_engine_node(pool: EnginePool) -> None:
        workers = {n.node_id: n for n in ray_cluster.worker_nodes}
        hosts = [s["node_id"] for s in pool.actor_stats() if s]
        ray_cluster.remove_node(next(workers[h] for h in hosts if h in workers))

    summary = _pipeline_with_fault(ray_cluster, tmp_path, monkeypatch, remove_an_engine_node)
    # the removal hit work in flight: engine calls were retried, or (the node also hosted a search worker,
    # whose pool counters died with it) that worker's shards were given out again
    assert summary.meter.retried > 0 or summary.redone_shards > 0
