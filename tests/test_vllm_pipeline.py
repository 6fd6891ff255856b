"""``tracemill run`` end to end on the real vLLM backend (SmolLM2-135M; the CPU build without a GPU): every
table is stored and validates, the cost figures are honest, and a vLLM actor killed mid-run loses no row.

Engine starts are the cost here (~20-30 s each on CPU): one undisturbed run, shared by both tests, and one
faulted run (its engine, plus the restart Ray makes after the kill).
"""

from __future__ import annotations

import json
import threading
import time

import pytest
import ray

from pipelines.config import load_config
from pipelines.run import execute
from pipelines.summary import RunSummary
from storage.catalog import Catalog
from storage.runs import read_run
from tests.cluster_fixtures import VLLM_TEST_KV_BYTES, capture_pools

pytest.importorskip("vllm")  # only where the Makefile cannot install vLLM (it does on x86-64 Linux)

TABLES = ("problems", "solutions", "nodes", "rollouts", "step_labels", "traces", "rejects")
OVERRIDES = {"problems.n": 2, "problems.mix": {1: 1.0}, "ray.num_cpus": 2, "ray.max_retries": 5,
             "engine.backend": "vllm", "engine.model": "smollm2-135m-instruct", "engine.num_cpus": 1,
             "engine.options": {"kv_cache_memory_bytes": VLLM_TEST_KV_BYTES}, "sampling.n_solutions": 2,
             "sampling.max_new_tokens": 24, "labeling.strategy": "linear", "labeling.options": {"k": 2},
             "mining.kinds": ["shortest"], "mining.datasets": False}


def _config(root):
    return load_config(None, {"storage.root": str(root), **OVERRIDES})


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory) -> tuple:
    root = tmp_path_factory.mktemp("vllm") / "data"
    start = time.perf_counter()
    summary = execute(_config(root), run_id="undisturbed", progress=False, report=False)
    print(f"\nvLLM e2e run: {time.perf_counter() - start:.1f} s wall, search phase {summary.search_wall_s:.1f} s, "
          f"{summary.meter.usage.completion_tokens} tokens, {summary.search_tokens_per_s:.1f} tokens/s in the search "
          f"phase, busy {summary.engine_busy_s:.1f} s, overhead {summary.orchestration_overhead:.1%}")
    return root, summary


def _count(cat: Catalog, table: str, run: str) -> int:
    return cat.sql(f"SELECT count(*) AS c FROM {table}", run_id=run).column("c")[0].as_py()


def test_a_run_on_vllm_stores_every_table_and_validates(undisturbed):
    root, summary = undisturbed
    assert summary.validation is not None and summary.validation.ok, summary.validation.summary()
    assert summary.problems == 2 and summary.solutions == 4 and not summary.failed_problems
    with Catalog(root) as cat:
        counts = {t: _count(cat, t, "undisturbed") for t in TABLES}
    assert counts["problems"] == 2 and counts["solutions"] == 4
    assert counts["nodes"] > 0 and counts["rollouts"] == summary.rollouts > 0
    assert counts["step_labels"] == summary.steps_labeled > 0
    run = read_run(root, "undisturbed")
    assert run is not None and run.engine == "vllm" and run.status == "finished"
    stats = json.loads(run.stats_json)
    assert stats["engine_completion_tokens"] > 0 and stats["engine_cached_tokens"] > 0  # the prefix cache hit
    # busy time is the union of in-flight calls: never more than the search phase's engine capacity
    assert len(stats["engine_busy_per_actor_s"]) == 1
    assert 0 < stats["engine_busy_s"] <= stats["search_wall_s"] * stats["replicas"]
    assert stats["orchestration_overhead"] == pytest.approx(RunSummary(
        "x", "r", search_wall_s=stats["search_wall_s"], engine_busy_s=stats["engine_busy_s"]).orchestration_overhead)
    assert stats["search_tokens_per_s"] > 0


def test_a_killed_vllm_actor_mid_run_stores_the_same_rows_as_an_undisturbed_run(undisturbed, monkeypatch):
    root, _ = undisturbed
    pools = capture_pools(monkeypatch)
    errors: list[BaseException] = []
    summaries: list[RunSummary] = []

    def run() -> None:
        try:
            summaries.append(execute(_config(root), run_id="faulted", progress=False, report=False))
        except BaseException as err:  # surfaced by the test thread
            errors.append(err)

    def answered() -> int:  # requests the engine answered (search workers route them; the driver owns the actor)
        return sum(s["requests"] for s in pools[-1].actor_stats() if s)

    runner = threading.Thread(target=run)
    runner.start()
    try:
        while not pools or answered() < 2:  # the engine is up and serving: kill it mid-run
            assert runner.is_alive(), errors
            time.sleep(0.05)
        ray.kill(pools[-1].actors[0], no_restart=False)
    finally:
        runner.join(timeout=400)
    assert not errors and not runner.is_alive(), errors
    assert summaries[0].meter.retried > 0  # the kill really hit calls in flight
    with Catalog(root) as cat:
        assert {t: _count(cat, t, "faulted") for t in TABLES} == {t: _count(cat, t, "undisturbed") for t in TABLES}
        once = cat.sql("SELECT count(*) AS n, count(DISTINCT problem_id) AS d FROM problems", run_id="faulted")
        assert once.to_pylist() == [{"n": 2, "d": 2}]
        dup = cat.sql("SELECT count(*) AS c FROM (SELECT request_key, rollout_index FROM rollouts "
                      "GROUP BY 1, 2 HAVING count(*) > 1)", run_id="faulted")
        assert dup.column("c")[0].as_py() == 0

        def texts(run: str) -> list:
            return cat.sql("SELECT problem_id, sample_index, text FROM solutions ORDER BY 1, 2",
                           run_id=run).to_pylist()

        assert texts("faulted") == texts("undisturbed")  # same seeds: the same samples after the retry
