"""``tracemill run``: problems → engine actors → sampled solutions → step labels → Parquet shards.

Parse: the config (``pipelines.config``) and the run id (``pipelines.jobs.check_run_id``). Build: the
problem stream (``pipelines.inputs``), the sampling and labeling configs and the engine spec
(``pipelines.build``). Run: engine actors and search workers on Ray; shards of problems stream to the workers
(``pipelines.search_worker``), each running one search program per problem (sample N solutions, label every
step) against the shared engines and committing a shard atomically as soon as its last problem finishes.
Save: the mined traces and datasets, the validation, the run's stats and the report.

The driver holds a few shards of problems and the counters, never rows, so memory does not grow with the
run; ``--resume`` redoes no committed shard and the dataset holds each problem exactly once (a repeated
problem id is a ``duplicate`` reject, decided the same way on resume).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from cluster.actors import ActorSpec
from cluster.monitor import EngineMonitor
from cluster.pool import EnginePool, PoolConfig
from cluster.problems.problem import Problem
from pipelines.build import actor_spec, labeling_options, new_run_id, open_judge, sampling_config
from pipelines.config import ConfigError, RunConfig
from pipelines.inputs import plan_shards, problem_stream
from pipelines.jobs import check_run_id, engine_pool, recorded_run
from pipelines.progress import progress_bar
from pipelines.search_worker import SearchJob, ShardDone, launch_worker, run_shards
from pipelines.summary import RunSummary
from pipelines.validate import validate_run
from search.labeling import make_config
from search.sampling import SamplingConfig
from storage.shards import ShardWriter

SHARD_COUNTERS = ("problems", "failed_problems", "solutions", "correct_solutions", "steps_labeled", "rollouts",
                  "rejects")  # ShardDone fields summed into the RunSummary


@dataclass(frozen=True)
class RunPlan:
    """One run, built from its config: what the driver needs to search it."""

    cfg: RunConfig
    run_id: str
    root: Path
    sampling: SamplingConfig
    labeling: Any  # the strategy's config object
    spec: ActorSpec
    resume: bool


def execute(cfg: RunConfig, run_id: str | None = None, resume: bool = False, progress: bool = True,
            ray_address: str | None = None, report: bool = True) -> RunSummary:
    """Run (or resume) one config end to end; returns the summary. Config errors raise ``ConfigError``."""
    root = Path(cfg.storage.root).resolve()
    check_run_id(root, cfg, run_id, resume)
    items = problem_stream(cfg.problems)
    try:
        lcfg = make_config(cfg.labeling.strategy, labeling_options(cfg))
    except (ValueError, TypeError) as err:
        raise ConfigError(f"config error: labeling.options: {err}") from None
    plan = RunPlan(cfg, run_id or new_run_id(cfg), root, sampling_config(cfg), lcfg, actor_spec(cfg), resume)
    summary = RunSummary(run_id=plan.run_id, root=str(root), replicas=cfg.engine.replicas)
    start = time.perf_counter()

    def stats() -> dict[str, Any]:
        summary.wall_s = time.perf_counter() - start
        return summary.stats()

    with recorded_run(root, plan.run_id, cfg, stats):
        search(plan, items, summary, progress, ray_address)
        summary.mined = mine_outputs(cfg, root, plan.run_id)
        summary.validation = validate_run(root, plan.run_id)
    if report:
        from pipelines.report import write_report

        summary.report = str(write_report(root, plan.run_id))
    return summary


def mine_outputs(cfg: RunConfig, root: Path, run_id: str) -> dict[str, int]:
    """Mine the configured trace kinds and build the PRM/SFT datasets from the run's stored labels."""
    from pipelines.export import build_datasets
    from pipelines.mine import mine_run

    counts: dict[str, int] = {}
    for kind in cfg.mining.kinds:
        out = mine_run(root=root, run_id=run_id, kind=kind, mode=cfg.mining.mode, seed=cfg.sampling.seed)
        counts[f"traces_{kind}"] = out["kept"]
    if cfg.mining.datasets:
        counts.update(build_datasets(root=root, run_id=run_id))  # the run's own options (BuildOptions.from_run)
    return counts


def search(plan: RunPlan, items: Iterator[Problem | dict], summary: RunSummary, progress: bool,
           ray_address: str | None) -> None:
    """Search every shard not yet committed; Ray is started (or joined) only when one is left."""
    cfg = plan.cfg
    writer = ShardWriter(plan.root, plan.run_id)
    committed = writer.committed() if plan.resume else set()
    todo = _todo_shards(plan_shards(items, cfg.storage.shard_size), writer, committed, summary)
    first = next(todo, None)
    if first is None:
        return
    todo = itertools.chain([first], todo)
    with engine_pool(plan.spec, cfg, ray_address) as pool:
        _run_workers(plan, pool, todo, summary, progress)


def _run_workers(plan: RunPlan, pool: EnginePool, todo: Iterator[tuple[str, list[Problem]]],
                 summary: RunSummary, progress: bool) -> None:
    """Launch the search workers, stream them the shards, then collect their counters and the engines'."""
    cfg = plan.cfg
    max_active = max(64, 8 * cfg.engine.replicas)  # programs in flight per search worker
    job = SearchJob(run_id=plan.run_id, root=str(plan.root), sampling=plan.sampling, strategy=cfg.labeling.strategy,
                    labeling=plan.labeling, ground_truth=cfg.engine.backend == "sim",
                    pool=PoolConfig(max_retries=cfg.ray.max_retries), max_active=max_active,
                    open_judge=open_judge(cfg))
    job_ref = ray.put(job)  # held until the run ends: a restarted worker is rebuilt from it
    launched = time.perf_counter()
    workers = [launch_worker(job_ref, pool.actors) for _ in range(cfg.ray.search_workers)]
    try:
        summary.search_workers = len(workers)
        ray.get([w.stats.remote() for w in workers])  # built (imports, engine handles)
        # engines loaded (model, KV cache, warm-up: a minute for vLLM on CPU): only now the search clock starts
        loading = [a.stats.remote() for a in pool.actors]
        ray.wait(loading, num_returns=len(loading))  # an engine that failed to build is the pool's to report
        summary.startup_s += time.perf_counter() - launched
        depth = max(2, -(-max_active // cfg.storage.shard_size) + 1)  # shards a worker holds: enough to stay busy
        with progress_bar(progress) as bar:
            task = bar.add_task("problems", total=cfg.problems.n or None)

            def shard_done(d: ShardDone) -> None:
                for name in SHARD_COUNTERS:
                    setattr(summary, name, getattr(summary, name) + getattr(d, name))
                summary.skipped_shards += d.skipped
                bar.advance(task, d.problems + d.failed_problems)

            start = time.perf_counter()
            with EngineMonitor(pool.actors) as monitor:
                summary.redone_shards = run_shards(workers, todo, depth, shard_done)
            summary.search_wall_s += time.perf_counter() - start
        for worker in workers:
            try:
                stats = ray.get(worker.stats.remote(), timeout=10)
                summary.meter.add(stats)
                summary.tool_calls += stats["tool_calls"]
                ray.get(worker.close.remote(), timeout=10)
            except (RayActorError, GetTimeoutError):  # a worker restarted at the end: its counters are lost
                continue
        engines = monitor.totals()
        summary.engine_busy_per_actor_s = [e.engine_s for e in engines]
        summary.engine_busy_s += sum(summary.engine_busy_per_actor_s)
        summary.engine_call_s += sum(e.call_s for e in engines)
        summary.engine_incarnations = [e.incarnations for e in engines]
        summary.engine_generated_tokens += sum(e.usage.completion_tokens for e in engines)
        summary.engine_timeline = monitor.timeline()
    finally:
        for worker in workers:
            ray.kill(worker, no_restart=True)


def _todo_shards(shards: Iterator[tuple[str, list]], writer: ShardWriter, committed: set[str],
                 summary: RunSummary) -> Iterator[tuple[str, list[Problem]]]:
    """The problem shards still to search; rejects shards are committed here as the stream reaches them."""
    for name, shard in shards:
        if name.startswith("load-rejects-"):
            writer.commit(name, {"rejects": shard})
            summary.rejects += len(shard)
        elif name in committed:
            summary.skipped_shards += 1
        else:
            yield name, shard
