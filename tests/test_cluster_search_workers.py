"""Search workers under faults on a real 3-node local Ray cluster: a killed search worker and a removed node
store the same rows as an undisturbed run, each problem once, and ``validate`` stays clean.

The fault is deterministic (``tests/gated_sim.py``): the engines hold every call of the victim worker's
problems, the test waits until another worker's shard is committed, then strikes and lets the engines go.
Shards go out round-robin, so with 2 workers and 6 shards worker ``v`` holds shards v, v+2 and v+4.
"""

from __future__ import annotations

import threading
import time

import pytest
import ray

from pipelines import run as run_module
from pipelines.config import load_config
from pipelines.inputs import plan_shards, problem_stream
from pipelines.run import execute
from storage.catalog import Catalog
from storage.shards import committed_shards
from tests.gated_sim import GATED

pytestmark = [pytest.mark.slow, pytest.mark.ray_cluster(workers=2)]
SHARDS, WORKERS = 6, 2


def _config(root, hold):
    engine = {"backend": GATED, "replicas": 2, "num_cpus": 0.5, "options": {"hold": str(hold)}}  # a holdable sim
    return load_config(None, {"storage.root": str(root), "engine": engine,
                              "problems.n": 4 * SHARDS, "problems.mix": {2: 0.5, 4: 0.5},
                              "storage.shard_size": 4, "labeling.strategy": "binary",
                              "mining.kinds": ["shortest"], "mining.datasets": False, "ray.max_retries": 5,
                              "ray.search_workers": WORKERS})


def _rows(root, run_id: str) -> dict[str, list]:
    queries = {
        "problems": "SELECT problem_id FROM problems",
        "solutions": "SELECT solution_id, text, correct, first_error FROM solutions",
        "nodes": "SELECT node_id, n, n_correct FROM nodes",
        "rollouts": "SELECT request_key, rollout_index, text FROM rollouts",
        "step_labels": "SELECT node_id, strategy, value, label_source FROM step_labels",
        "traces": "SELECT trace_id FROM traces",
        "rejects": "SELECT stage, source, reason FROM rejects",
    }
    with Catalog(root, save=False) as cat:
        return {t: sorted(tuple(r.values()) for r in cat.sql(q, run_id=run_id).to_pylist())
                for t, q in queries.items()}


def _with_fault(ray_cluster, tmp_path, monkeypatch, pick_victim, strike):
    """An undisturbed run, then the same run with ``strike(victim_handle)`` once another worker's shard is
    committed while every shard of the victim is held; returns the faulted run's summary."""
    root, hold = tmp_path / "data", tmp_path / "hold"
    cfg = _config(root, hold)
    execute(cfg, run_id="undisturbed", progress=False, report=False)

    workers: list = []
    launch = run_module.launch_worker
    monkeypatch.setattr(run_module, "launch_worker", lambda *a: workers.append(launch(*a)) or workers[-1])
    hold.write_text("*\n")  # nothing runs until the victim is chosen
    out: dict = {}
    runner = threading.Thread(target=lambda: _capture(out, execute, cfg, run_id="faulted", progress=False,
                                                      report=False))
    runner.start()
    while len(workers) < WORKERS:
        assert runner.is_alive(), out
        time.sleep(0.05)
    v = pick_victim(workers)
    shards = [shard for _, shard in plan_shards(problem_stream(cfg.problems), 4)]
    victim_shards = {f"shard-{i:06d}" for i in range(v, SHARDS, WORKERS)}
    hold.write_text("".join(p.question + "\n" for i in range(v, SHARDS, WORKERS) for p in shards[i]))
    while not committed_shards(root, "faulted") - victim_shards:  # another worker's shard is in
        assert runner.is_alive(), out
        time.sleep(0.05)
    assert not committed_shards(root, "faulted") & victim_shards  # held: the victim has all of them to lose
    strike(workers[v])
    hold.unlink()
    runner.join(timeout=300)
    assert not runner.is_alive() and "error" not in out, out.get("error")
    summary = out["summary"]
    assert summary.validation.ok, summary.validation.summary()
    assert summary.redone_shards >= len(victim_shards)  # the victim's shards were given out again
    assert _rows(root, "faulted") == _rows(root, "undisturbed")
    with Catalog(root, save=False) as cat:
        once = cat.sql("SELECT count(*) AS n, count(DISTINCT problem_id) AS d FROM problems", run_id="faulted")
    assert once.to_pylist() == [{"n": 4 * SHARDS, "d": 4 * SHARDS}]
    return summary


def _capture(out: dict, fn, *args, **kwargs) -> None:
    try:
        out["summary"] = fn(*args, **kwargs)
    except BaseException as err:  # surfaced by the test thread
        out["error"] = err


def test_killed_search_worker_has_its_shards_redone_once(ray_cluster, tmp_path, monkeypatch):
    summary = _with_fault(ray_cluster, tmp_path, monkeypatch, lambda workers: 0,
                          lambda victim: ray.kill(victim, no_restart=False))
    assert summary.redone_shards >= SHARDS // WORKERS  # every shard the killed worker held went out again


def test_removed_node_of_a_search_worker_loses_no_row(ray_cluster, tmp_path, monkeypatch):
    ray_cluster.add_node(num_cpus=1)  # room for what the removed node hosted
    ray_cluster.wait_for_nodes()
    nodes = {n.node_id: n for n in ray_cluster.worker_nodes}
    placed: dict[int, str] = {}

    def on_a_worker_node(workers) -> int:
        placed.update({i: ray.get(w.stats.remote())["node_id"] for i, w in enumerate(workers)})
        movable = [i for i, node in placed.items() if node in nodes]
        assert movable, "every search worker is on the head node, which cannot be removed"
        return movable[0]

    def remove_its_node(victim) -> None:
        ray_cluster.remove_node(nodes[next(placed[i] for i, node in placed.items() if node in nodes)])

    _with_fault(ray_cluster, tmp_path, monkeypatch, on_a_worker_node, remove_its_node)
