"""Search workers on a local Ray: shards streamed with bounded outstanding work, duplicates kept as rejects
(decided the same way on resume), and the rows equal to what one worker stores."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import ray

from cluster.actors import ActorSpec
from cluster.pool import EnginePool, PoolConfig
from cluster.problems import loaders
from cluster.problems.loaders import iter_arith, load_arith
from cluster.problems.problem import Problem
from pipelines.build import sampling_config
from pipelines.config import load_config
from pipelines.inputs import plan_shards, problem_stream
from pipelines.run import execute
from pipelines.search_worker import SearchJob, ShardDone, launch_worker, run_shards
from search.labeling import make_config
from storage.catalog import Catalog
from storage.layout import RunPaths
from storage.manifest import Manifest
from storage.shards import committed_shards
from tests.cluster_fixtures import SLOW_START, SLOW_START_S, capture_monitors

DUP_SEED, DUP_N, DUP_INDEX = 0, 160, 155  # 1-step arith problems, seed 0: problem 155 repeats an earlier one


def _config(root, **overrides):
    return load_config(None, {"storage.root": str(root), "engine": {"backend": "sim", "replicas": 2, "num_cpus": 0.5},
                              "problems.n": DUP_N, "problems.seed": DUP_SEED,
                              "problems.mix": {1: 1.0}, "storage.shard_size": 16, "labeling.strategy": "binary",
                              "mining.kinds": ["shortest"], "mining.datasets": False, **overrides})


def _rows(root, run_id: str) -> dict[str, list]:
    """Every stored row of the run's tables that a worker could get wrong, as sorted tuples."""
    queries = {
        "problems": "SELECT problem_id, question FROM problems",
        "solutions": "SELECT solution_id, text, correct, first_error FROM solutions",
        "nodes": "SELECT node_id, parent_id, n, n_correct FROM nodes",
        "rollouts": "SELECT request_key, rollout_index, text FROM rollouts",
        "step_labels": "SELECT node_id, strategy, value, label_source FROM step_labels",
        "rejects": "SELECT stage, source, reason FROM rejects",
    }
    with Catalog(root, save=False) as cat:
        return {t: sorted(tuple(r.values()) for r in cat.sql(q, run_id=run_id).to_pylist())
                for t, q in queries.items()}


def test_arith_stream_keeps_a_repeated_problem_once_and_rejects_the_rest(monkeypatch):
    monkeypatch.setattr(loaders, "ARITH_CHUNK", 7)  # generated 7 at a time: slices must join seamlessly
    items = list(iter_arith(DUP_N, DUP_SEED, {1: 1.0}))
    problems = [i for i in items if isinstance(i, Problem)]
    rejects = [i for i in items if not isinstance(i, Problem)]
    assert len(problems) == DUP_N - 1 == len({p.problem_id for p in problems})
    assert [(r["source"], r["reason"]) for r in rejects] == [(f"arith:{DUP_INDEX}", "duplicate")]
    whole = load_arith(DUP_N, DUP_SEED, {1: 1.0})  # all at once
    assert [p.question for p in problems] == [p.question for i, p in enumerate(whole) if i != DUP_INDEX]
    assert whole[DUP_INDEX].problem_id in {p.problem_id for p in problems}


def test_shards_are_named_by_the_stream_alone():
    items = list(iter_arith(DUP_N, DUP_SEED, {1: 1.0}))
    shards = list(plan_shards(items, 16))
    names = [n for n, _ in shards]
    assert names == [f"shard-{i:06d}" for i in range(10)] + ["load-rejects-000000"]
    assert [len(s) for _, s in shards] == [16] * 9 + [15, 1]
    assert [p.problem_id for _, s in shards[:-1] for p in s] == \
        [p.problem_id for p in items if isinstance(p, Problem)]


def test_run_keeps_the_duplicate_as_a_reject_and_resume_decides_the_same(ray_cluster, tmp_path):
    root = tmp_path / "data"
    summary = execute(_config(root), run_id="full", progress=False, report=False)
    assert summary.validation is not None and summary.validation.ok, summary.validation.summary()
    assert summary.problems == DUP_N - 1 and summary.search_workers == 2
    with Catalog(root, save=False) as cat:
        dup = cat.sql("SELECT source, reason FROM rejects WHERE stage = 'load'", run_id="full").to_pylist()
    assert dup == [{"source": f"arith:{DUP_INDEX}", "reason": "duplicate"}]

    # the run as a crash after its first 5 shards leaves it: the rest not in the manifest (their files strays)
    execute(_config(root), run_id="resumed", progress=False, report=False)
    paths = RunPaths(root, "resumed")
    manifest = Manifest.load(paths)
    manifest.shards = {k: v for k, v in manifest.shards.items() if k in {f"shard-{i:06d}" for i in range(5)}}
    manifest.save(paths)
    resumed = execute(_config(root), run_id="resumed", resume=True, progress=False, report=False)
    assert resumed.skipped_shards == 5 and resumed.problems == DUP_N - 1 - 5 * 16
    assert _rows(root, "resumed") == _rows(root, "full")

    # one search worker stores exactly what two stored
    execute(_config(root, **{"ray.search_workers": 1}), run_id="one", progress=False, report=False)
    assert _rows(root, "one") == _rows(root, "full")


def test_driver_holds_at_most_depth_shards_per_worker(ray_cluster, tmp_path):
    cfg = _config(tmp_path / "data", **{"storage.shard_size": 4, "problems.n": 48})
    pool = EnginePool.launch(ActorSpec(backend="sim", engine={"latency_s": 0.01}, num_cpus=0.5), 2)
    job = SearchJob(run_id="bounded", root=str(tmp_path / "data"), sampling=sampling_config(cfg),
                    strategy="binary", labeling=make_config("binary", {}), ground_truth=True,
                    pool=PoolConfig(), max_active=8)
    workers = [launch_worker(job, pool.actors) for _ in range(2)]
    pulled, reported, most = [0], [], [0]

    def shards() -> Iterator[tuple[str, list]]:
        for name, shard in plan_shards(problem_stream(cfg.problems), 4):
            pulled[0] += 1
            most[0] = max(most[0], pulled[0] - len(reported))
            yield name, shard

    def done(d: ShardDone) -> None:
        reported.append(d.name)

    try:
        assert run_shards(workers, shards(), 2, done) == 0
    finally:
        for w in workers:
            ray.kill(w)
        pool.shutdown()
    assert sorted(reported) == [f"shard-{i:06d}" for i in range(12)]  # each shard reported once
    assert most[0] <= 2 * 2  # depth x workers shards of problems outstanding, never the whole stream
    assert committed_shards(tmp_path / "data", "bounded") == set(reported)


def test_the_search_clock_starts_once_every_engine_is_loaded(ray_cluster, tmp_path):
    """An engine that takes SLOW_START_S to build (as vLLM takes a minute to load on CPU): that time is the
    run's start-up, not idle engine time inside the search phase (which would count as orchestration
    overhead and lower the search-phase tokens/s the busy-engine benchmark compares with raw vLLM)."""
    cfg = _config(tmp_path / "data", **{"engine": {"backend": SLOW_START, "replicas": 2, "num_cpus": 0.5},
                                        "problems.n": 16})
    summary = execute(cfg, run_id="slow-start", progress=False, report=False)
    assert summary.problems == 16 and summary.meter.usage.completion_tokens > 0
    assert summary.startup_s >= SLOW_START_S - 0.5  # the engines were launched just before the workers
    assert summary.startup_s + summary.search_wall_s <= summary.wall_s


def test_every_generated_token_is_on_the_engine_timeline_and_in_the_report(ray_cluster, tmp_path, monkeypatch):
    """No fault: each engine's timeline sums to what it generated, and the engines generated exactly what the
    workers' pools delivered (each result once); the report plots one line per engine."""
    monitors = capture_monitors(monkeypatch)  # samples every 0.05 s: many samples, however short the run
    root = tmp_path / "data"
    cfg = _config(root, **{"engine.options": {"latency_s": 0.01, "continuous": True}, "problems.n": 48})
    summary = execute(cfg, run_id="timed", progress=False, report=True)
    with Catalog(root, save=False) as cat:
        stats = json.loads(cat.sql("SELECT stats_json FROM runs", run_id="timed").column(0)[0].as_py())
    timeline = stats["engine_timeline"]
    assert sorted(timeline["tokens"]) == ["engine-0", "engine-1"] and timeline["bucket_s"] >= 1.0
    assert all(all(t >= 0 for t in tokens) for tokens in timeline["tokens"].values())
    assert sum(map(sum, timeline["tokens"].values())) == stats["engine_generated_tokens"] \
        == stats["engine_completion_tokens"] == summary.meter.usage.completion_tokens > 0
    assert stats["engine_incarnations"] == [1, 1] and len(monitors) == 1
    assert all(sum(t) > 0 for t in timeline["tokens"].values())  # both engines served the run
    page = Path(summary.report).read_text(encoding="utf-8")
    assert "Generated tokens/s of each engine" in page
