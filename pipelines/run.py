"""``tracemill run``: problems → engine actors → sampled solutions → step labels → Parquet shards.

Parse the config, open the problem stream, start (or join) Ray, launch engine actors and search workers,
then stream shards of problems to the workers (``pipelines.search_worker``): each runs one search program per
problem (sample N solutions, label every step) against the shared engines and commits a shard atomically as
soon as its last problem finishes. The driver holds a few shards of problems and the counters, never rows,
so memory does not grow with the run; ``--resume`` redoes no committed shard and the dataset holds each
problem exactly once (a repeated problem id is a ``duplicate`` reject, decided the same way on resume).
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import ray
from ray._private import ray_constants
from ray.exceptions import GetTimeoutError, RayActorError
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from cluster import arith
from cluster.actors import ActorSpec, actor_demand
from cluster.pool import EnginePool, PoolConfig
from cluster.resources import Demand, Unschedulable, require_placeable
from pipelines.config import ConfigError, RunConfig
from pipelines.search_worker import SearchJob, ShardDone, launch_worker, run_shards
from pipelines.validate import Validation, validate_run
from search.labeling import STRATEGIES, make_config
from search.loaders import LoadError, attach_gold, iter_arith, iter_problems
from search.problems import Problem
from search.sampling import SamplingConfig
from search.tools import ToolConfig
from storage.catalog import Catalog
from storage.layout import check_name, is_disk_full
from storage.runs import fail_run, finish_run, read_run, start_run
from storage.shards import ShardWriter

FEW_SHOT_SEED = 10_007  # worked examples come from a seed no quickstart problem set uses
REJECT_SHARD_ROWS = 4096  # load rejects (bad rows, duplicates) per committed rejects shard


@dataclass
class Meter:
    """Engine usage of the run (the summary's cost figures), from the pool's per-actor counters.

    The pool counts each generated request once, so results shared by several programs or reproduced by
    a retry are not double counted.
    """

    calls: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    retried: int = 0  # requests resubmitted after their call failed (an engine died, or raised)

    def add(self, pool_stats: dict[str, Any]) -> None:
        self.calls += pool_stats["calls"]
        self.requests += pool_stats["completed"]
        self.prompt_tokens += pool_stats["prompt_tokens"]
        self.completion_tokens += pool_stats["completion_tokens"]
        self.cached_tokens += pool_stats["cached_tokens"]
        self.retried += pool_stats["retried"]


@dataclass
class RunSummary:
    run_id: str
    root: str
    problems: int = 0
    rejects: int = 0
    failed_problems: int = 0
    skipped_shards: int = 0
    redone_shards: int = 0  # given to a search worker again because the one holding them died
    search_workers: int = 0
    solutions: int = 0
    correct_solutions: int = 0
    steps_labeled: int = 0
    rollouts: int = 0
    tool_calls: int = 0  # sandbox calls of code steps (tools.python)
    wall_s: float = 0.0
    replicas: int = 1
    mined: dict[str, int] = field(default_factory=dict)  # rows per mined table (traces by kind, datasets)
    report: str = ""  # path of the HTML report
    search_wall_s: float = 0.0  # wall time of the search phase (engines running)
    # engine busy time: per actor the UNION of its in-flight call intervals (concurrent calls counted once),
    # summed over actors; a restarted actor's counters start again, so a killed engine's time is lost
    engine_busy_s: float = 0.0
    engine_busy_per_actor_s: list[float] = field(default_factory=list)
    engine_call_s: float = 0.0  # time inside engine calls summed per call (> busy when calls overlap)
    validation: Validation | None = None  # the dataset invariants, checked once the run is mined
    meter: Meter = field(default_factory=Meter)

    @property
    def orchestration_overhead(self) -> float:
        """Share of the search phase's engine capacity (wall x replicas) with no call inside any engine."""
        capacity = self.search_wall_s * self.replicas
        return max(0.0, 1 - self.engine_busy_s / capacity) if capacity else 0.0

    @property
    def search_tokens_per_s(self) -> float:
        """Generated tokens per second of the search phase (the engines' throughput as the run saw it)."""
        return self.meter.completion_tokens / self.search_wall_s if self.search_wall_s else 0.0

    @property
    def accuracy(self) -> float:
        return self.correct_solutions / self.solutions if self.solutions else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.meter.completion_tokens / self.wall_s if self.wall_s else 0.0

    def stats(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("meter", "run_id", "root", "report", "validation")}
        if self.validation is not None:
            out["validation"] = {c.name: c.violations for c in self.validation.checks}
        out.update({f"engine_{k}": v for k, v in asdict(self.meter).items()})
        out.update(accuracy=self.accuracy, tokens_per_s=self.tokens_per_s,
                   search_tokens_per_s=self.search_tokens_per_s,
                   orchestration_overhead=self.orchestration_overhead)
        return out


def new_run_id(cfg: RunConfig) -> str:
    return f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"


def code_version() -> str:
    """The git commit of this checkout, or the package version when not run from git."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=5)
        if out.returncode == 0:
            return out.stdout.strip()
    except OSError:
        pass
    return "0.1.0"


def problem_stream(cfg: RunConfig) -> Iterator[Problem | dict]:
    """The run's problems and load rejects, in order, read lazily; a missing file or unknown format raises
    ``ConfigError`` here, before the run writes anything. Repeated problem ids are ``duplicate`` rejects."""
    p = cfg.problems
    if p.source == "arith":
        return iter_arith(p.n, p.seed, dict(p.mix))
    try:
        items = iter_problems(p.source, None if p.format == "auto" else p.format)
        if p.n:
            items = _first_problems(items, p.n)
        return attach_gold(items, p.gold_files) if p.gold_files else items
    except LoadError as err:
        raise ConfigError(f"config error: problems: {err}") from None


def _first_problems(items: Iterator[Problem | dict], n: int) -> Iterator[Problem | dict]:
    """``items`` up to and including the ``n``-th problem (the rejects met before it pass through)."""
    for item in items:
        yield item
        if isinstance(item, Problem):
            n -= 1
            if n == 0:
                return


def load_inputs(cfg: RunConfig) -> tuple[list[Problem], list[dict]]:
    """The whole ``problem_stream`` as lists (for scripts that want every problem at once)."""
    problems: list[Problem] = []
    rejects: list[dict] = []
    for item in problem_stream(cfg):
        (problems if isinstance(item, Problem) else rejects).append(item)
    return problems, rejects


def plan_shards(items: Iterable[Problem | dict], shard_size: int) -> Iterator[tuple[str, list[Problem] | list[dict]]]:
    """Chunk a problem stream into named shards: ``shard-NNNNNN`` of ``shard_size`` problems, and
    ``load-rejects-NNNNNN`` of up to ``REJECT_SHARD_ROWS`` rejects. Names depend only on the stream, so a
    resumed run plans the same shards and skips the committed ones."""
    problems: list[Problem] = []
    rejects: list[dict] = []
    counts = itertools.count(), itertools.count()
    for item in items:
        if isinstance(item, Problem):
            problems.append(item)
            if len(problems) == shard_size:
                yield f"shard-{next(counts[0]):06d}", problems
                problems = []
        else:
            rejects.append(item)
            if len(rejects) == REJECT_SHARD_ROWS:
                yield f"load-rejects-{next(counts[1]):06d}", rejects
                rejects = []
    if problems:
        yield f"shard-{next(counts[0]):06d}", problems
    if rejects:
        yield f"load-rejects-{next(counts[1]):06d}", rejects


def few_shot_examples(count: int, delimiter: str) -> tuple[tuple[str, str], ...]:
    """Worked arith solutions in the step format the labeler expects (one step per operation)."""
    examples = []
    for spec in arith.generate(count, FEW_SHOT_SEED, {2: 1.0}):
        chain, steps = spec.chain, []
        for i, step in enumerate(spec.steps):
            steps.append(arith.format_step(spec.step_clause(i, chain[i]), chain[i], step.op, step.operand,
                                           chain[i + 1]))
        steps.append(arith.format_answer(spec.answer))
        examples.append((spec.question, delimiter.join(steps)))
    return tuple(examples)


def sampling_config(cfg: RunConfig) -> SamplingConfig:
    """The search's sampling settings: ``[sampling]`` plus the python tool of ``[tools]`` (a guided-search
    recipe has no ``[tools]``: its strategies sample without tool calls)."""
    s = cfg.sampling
    tools = getattr(cfg, "tools", None)
    return SamplingConfig(n_solutions=s.n_solutions, max_new_tokens=s.max_new_tokens, temperature=s.temperature,
                          top_p=s.top_p, delimiter=s.delimiter, seed=s.seed,
                          few_shot=few_shot_examples(s.few_shot, s.delimiter),
                          system_prompt=s.system_prompt or None, style=s.style,
                          tools=ToolConfig(**tools.model_dump()) if tools is not None else ToolConfig())


def labeling_options(cfg: RunConfig) -> dict[str, Any]:
    """The strategy's options; rollouts sample like the solutions unless ``options.rollout`` says otherwise."""
    s = cfg.sampling
    rollout = {"max_new_tokens": s.max_new_tokens, "temperature": s.temperature, "top_p": s.top_p, "seed": s.seed,
               "tools": cfg.tools.model_dump()}
    options = dict(cfg.labeling.options)
    options["rollout"] = {**rollout, **options.get("rollout", {})}
    if "delimiter" in {f.name for f in fields(STRATEGIES[cfg.labeling.strategy].config)}:
        options.setdefault("delimiter", s.delimiter)  # mcts splits rollouts into steps
    return options


def actor_spec(cfg: RunConfig) -> ActorSpec:
    e = cfg.engine
    engine: dict[str, Any] = dict(e.options)
    if e.backend == "transformers":
        engine = {"model": e.model, "max_batch_size": e.max_batch_size, **engine}
    elif e.backend == "vllm":
        engine = {"model": e.model, **engine}
    elif e.backend == "openai":  # engine.model is the served model's name; max_batch_size bounds calls in flight
        engine = {"model": e.model, "max_concurrency": e.max_batch_size, **engine}
    elif e.backend == "sim":
        engine = {"delimiter": cfg.sampling.delimiter, **engine}
    return ActorSpec(backend=e.backend, engine=engine, num_cpus=e.num_cpus, num_gpus=e.num_gpus)


def execute(cfg: RunConfig, run_id: str | None = None, resume: bool = False, progress: bool = True,
            ray_address: str | None = None, report: bool = True) -> RunSummary:
    """Run (or resume) one config end to end; returns the summary. Config errors raise ``ConfigError``."""
    root = Path(cfg.storage.root).resolve()
    check_run_id(root, cfg, run_id, resume)
    items = problem_stream(cfg)
    try:
        lcfg = make_config(cfg.labeling.strategy, labeling_options(cfg))
    except (ValueError, TypeError) as err:
        raise ConfigError(f"config error: labeling.options: {err}") from None
    scfg = sampling_config(cfg)
    spec = actor_spec(cfg)
    run_id = run_id or new_run_id(cfg)
    summary = RunSummary(run_id=run_id, root=str(root), replicas=cfg.engine.replicas)
    start = time.perf_counter()
    start_run(root, run_id, cfg.model_dump(mode="json"),
              model=cfg.engine.model if cfg.engine.backend != "sim" else "sim", engine=cfg.engine.backend,
              code_version=code_version())
    try:
        _execute(cfg, items, scfg, lcfg, spec, run_id, root, summary, resume, progress, ray_address)
        summary.mined = mine_outputs(cfg, root, run_id)
        summary.validation = validate_run(root, run_id)
        summary.wall_s = time.perf_counter() - start
        finish_run(root, run_id, summary.stats())
    except BaseException as err:
        summary.wall_s = time.perf_counter() - start
        _mark_failed(root, run_id, err, summary)
        raise
    with Catalog(root):  # refresh the catalog file so `cd tracemill_data && duckdb catalog.duckdb` sees this run
        pass
    if report:
        from pipelines.report import write_report

        summary.report = str(write_report(root, run_id))
    return summary


def _mark_failed(root: Path, run_id: str, err: BaseException, summary: RunSummary) -> None:
    """Record the run as failed; on a full disk, say so and how to finish it (notes on ``err``, one line)."""
    try:
        fail_run(root, run_id, f"{type(err).__name__}: {err}", summary.stats())
    except OSError as second:  # the disk is so full that even the freed reserve did not hold the row
        err.add_note(f"run {run_id} could not be marked failed either ({second.strerror}); it still reads running")
        return
    if is_disk_full(err):
        err.add_note(f"run {run_id} is marked failed; free some space under {root}, then finish it with "
                     f"tracemill run --config <its config> --resume {run_id}")
def check_run_id(root: Path, cfg: RunConfig, run_id: str | None, resume: bool) -> None:
    """``ConfigError`` (before anything is written) unless ``run_id`` can start or resume a run of ``cfg``.

    The id must be a safe path component; ``resume`` needs an existing run started with the same config
    (the message names the keys that differ: a resume skips committed shards, so two configs would mix);
    a fresh run must not reuse an existing id.
    """
    if run_id is None:
        if resume:
            raise ConfigError("config error: --resume needs the id of the run to finish")
        return
    try:
        check_name("run id", run_id)
    except ValueError as err:
        raise ConfigError(f"config error: {err}") from None
    previous = read_run(root, run_id)
    if not resume:
        if previous is not None:
            raise ConfigError(f"config error: run {run_id!r} already exists under {root} ({previous.status}); "
                              f"--resume {run_id} finishes it")
        return
    if previous is None:
        raise ConfigError(f"config error: --resume: no run {run_id!r} under {root}")
    changed = config_diff(json.loads(previous.config_json), cfg.model_dump(mode="json"))
    if changed:
        shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
        raise ConfigError(f"config error: --resume {run_id}: the config differs from the run's in {shown}")


def config_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two config dicts (a key on one side only counts)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return [] if old == new else [prefix or "<root>"]
    out: list[str] = []
    for key in sorted(set(old) | set(new), key=str):
        out += config_diff(old.get(key, _MISSING), new.get(key, _MISSING), f"{prefix}.{key}" if prefix else str(key))
    return out


_MISSING = object()


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


def _execute(cfg: RunConfig, items: Iterator[Problem | dict], scfg: SamplingConfig, lcfg: Any, spec: ActorSpec,
             run_id: str, root: Path, summary: RunSummary, resume: bool, progress: bool,
             ray_address: str | None) -> None:
    writer = ShardWriter(root, run_id)
    committed = writer.committed() if resume else set()
    todo = _todo_shards(plan_shards(items, cfg.storage.shard_size), writer, committed, summary)
    first = next(todo, None)
    if first is None:
        return
    todo = itertools.chain([first], todo)

    started_ray = connect_ray(ray_address if ray_address is not None else cfg.ray.address, cfg.ray.num_cpus)
    require_resources([actor_demand(spec, cfg.engine.replicas)], cfg.ray.placement_timeout_s, started_ray)
    max_retries = cfg.ray.max_retries
    pool = EnginePool.launch(spec, cfg.engine.replicas, PoolConfig(max_retries=max_retries))
    workers: list[Any] = []
    try:
        max_active = max(64, 8 * cfg.engine.replicas)  # programs in flight per search worker
        job = SearchJob(run_id=run_id, root=str(root), sampling=scfg, strategy=cfg.labeling.strategy,
                        labeling=lcfg, ground_truth=cfg.engine.backend == "sim",
                        pool=PoolConfig(max_retries=max_retries), max_active=max_active)
        job_ref = ray.put(job)  # held until the run ends: a restarted worker is rebuilt from it
        workers = [launch_worker(job_ref, pool.actors) for _ in range(cfg.ray.search_workers)]
        summary.search_workers = len(workers)
        ray.get([w.stats.remote() for w in workers])  # built (imports, engine handles): the search clock starts
        depth = max(2, -(-max_active // cfg.storage.shard_size) + 1)  # shards a worker holds: enough to stay busy
        with _progress(progress) as bar:
            task = bar.add_task("problems", total=cfg.problems.n or None)

            def shard_done(d: ShardDone) -> None:
                for name in ("problems", "failed_problems", "solutions", "correct_solutions", "steps_labeled",
                             "rollouts", "rejects"):
                    setattr(summary, name, getattr(summary, name) + getattr(d, name))
                summary.skipped_shards += d.skipped
                bar.advance(task, d.problems + d.failed_problems)

            start = time.perf_counter()
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
        actor_stats = [s for s in pool.actor_stats() if s]
        summary.engine_busy_per_actor_s = [s.get("engine_s", 0.0) for s in actor_stats]
        summary.engine_busy_s += sum(summary.engine_busy_per_actor_s)
        summary.engine_call_s += sum(s.get("call_s", 0.0) for s in actor_stats)
    finally:
        for worker in workers:
            ray.kill(worker, no_restart=True)
        pool.shutdown()
        if started_ray:  # a Ray this run started ends with it; a joined cluster stays up
            ray.shutdown()


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



LOOPBACK = "127.0.0.1"


def connect_ray(address: str, num_cpus: int | None) -> bool:
    """Join ``address`` (or the cluster a Ray job runs in), else start a local Ray bound to loopback.

    A local Ray serves this process only, so none of its servers listens beyond 127.0.0.1: its node IP is
    the loopback address (Ray's GCS, raylet, agents and workers then bind to it) and there is no dashboard.
    Opening a cluster to the network is a deliberate ``ray start --head --node-ip-address ...`` plus
    ``ray.address`` (README, "Running on a cluster"). Returns True when this call started a local Ray (the
    caller shuts it down).
    """
    if ray.is_initialized():
        return False
    if address or os.environ.get("RAY_ADDRESS"):
        # a head on this machine bound to loopback (`ray start --node-ip-address 127.0.0.1`) is joined there
        loopback = _is_loopback_address(address or os.environ["RAY_ADDRESS"])
        with _loopback_node_ip() if loopback else nullcontext():
            ray.init(address=address or None, log_to_driver=False, configure_logging=False)
        return False
    # "local" starts a fresh Ray even when another one runs on this machine (None would join that one)
    with _loopback_node_ip():
        ray.init(address="local", include_dashboard=False, num_cpus=num_cpus, _node_ip_address=LOOPBACK,
                 log_to_driver=False, configure_logging=False)
    return True


def _is_loopback_address(address: str) -> bool:
    """``127.0.0.1:6379``, ``ray://localhost:10001``: a cluster address on this machine's loopback."""
    host = urlsplit(address if "://" in address else f"//{address}").hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name, or "auto"
        return False


@contextmanager
def _loopback_node_ip() -> Iterator[None]:
    """Let ``ray.init(_node_ip_address="127.0.0.1")`` keep the loopback address.

    Ray (2.60) swaps a loopback node IP, or a loopback cluster address, for the machine's routable IP unless
    Ray "clusters" are disabled (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read once at import into
    ``ray_constants.ENABLE_RAY_CLUSTER``), and its servers bind to all interfaces unless the node IP is
    127.0.0.1. The flag is set for this one ``ray.init`` only, so joining a real cluster later in the
    process is unaffected.
    """
    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def require_resources(demands: list[Demand], timeout_s: float, started_ray: bool) -> None:
    """Fail the run at once (``ConfigError``: one line, exit 2, run marked failed) on what Ray cannot place.

    A local Ray this run started is checked for certain against its totals, then every placement is
    probed within ``ray.placement_timeout_s``; on refusal that Ray is shut down before the error goes up.
    """
    try:
        require_placeable(demands, timeout_s, certain=started_ray)
    except Unschedulable as err:
        if started_ray:
            ray.shutdown()
        raise ConfigError(f"config error: {err} (set by engine.num_cpus, engine.num_gpus, engine.replicas, "
                          "ray.num_cpus)") from None


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    disable=not enabled or bool(os.environ.get("TRACEMILL_NO_PROGRESS")))


class RateColumn(ProgressColumn):
    """Items per second (or seconds per item when slower than one a second)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if not speed:
            return Text("-- it/s")
        return Text(f"{speed:.2f} it/s" if speed >= 1 else f"{1 / speed:.1f} s/it")
