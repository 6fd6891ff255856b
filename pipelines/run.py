"""``tracemill run``: problems → engine actors → sampled solutions → step labels → Parquet shards.

Parse the config, load problems, start (or join) Ray, launch engine actors, then drive one search program
per problem (sample N solutions, label every step) across all problems at once. Problems are grouped into
shards; a shard is committed atomically as soon as its last problem finishes, so ``--resume`` redoes no
committed shard and the dataset holds each problem exactly once.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import ray
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
from cluster.actors import ActorSpec
from cluster.pool import EnginePool, PoolConfig, run_programs_async
from pipelines.config import ConfigError, RunConfig
from pipelines.validate import Validation, validate_run
from search.given import given_solutions, has_given_solution
from search.labeling import STRATEGIES, make_config, rows
from search.labeling.base import PSEUDO_GOLD, mark_gold_source, with_pseudo_gold
from search.loaders import LoadError, attach_gold, load_arith, load_problems
from search.problems import Problem
from search.program import Program
from search.sampling import SamplingConfig, prompt_messages, sample_solutions
from storage.catalog import Catalog
from storage.rejects import reject_row
from storage.runs import fail_run, finish_run, start_run
from storage.shards import ShardWriter
from verifier.answers import judge

FEW_SHOT_SEED = 10_007  # worked examples come from a seed no quickstart problem set uses


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

    def add(self, pool_stats: dict[str, Any]) -> None:
        self.calls += pool_stats["calls"]
        self.requests += pool_stats["completed"]
        self.prompt_tokens += pool_stats["prompt_tokens"]
        self.completion_tokens += pool_stats["completion_tokens"]
        self.cached_tokens += pool_stats["cached_tokens"]


@dataclass
class RunSummary:
    run_id: str
    root: str
    problems: int = 0
    rejects: int = 0
    failed_problems: int = 0
    skipped_shards: int = 0
    solutions: int = 0
    correct_solutions: int = 0
    steps_labeled: int = 0
    rollouts: int = 0
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


def load_inputs(cfg: RunConfig) -> tuple[list[Problem], list[dict]]:
    """The run's problems and load rejects; a missing file or unknown format raises ``ConfigError``."""
    p = cfg.problems
    if p.source == "arith":
        return load_arith(p.n, p.seed, dict(p.mix)), []
    try:
        problems, rejects = load_problems(p.source, None if p.format == "auto" else p.format)
        problems = problems[: p.n] if p.n else problems
        if p.gold_files:
            problems, more = attach_gold(problems, p.gold_files)
            rejects += more
    except LoadError as err:
        raise ConfigError(f"config error: problems: {err}") from None
    return problems, rejects


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
    s = cfg.sampling
    return SamplingConfig(n_solutions=s.n_solutions, max_new_tokens=s.max_new_tokens, temperature=s.temperature,
                          top_p=s.top_p, delimiter=s.delimiter, seed=s.seed,
                          few_shot=few_shot_examples(s.few_shot, s.delimiter),
                          system_prompt=s.system_prompt or None, style=s.style)


def labeling_options(cfg: RunConfig) -> dict[str, Any]:
    """The strategy's options; rollouts sample like the solutions unless ``options.rollout`` says otherwise."""
    s = cfg.sampling
    rollout = {"max_new_tokens": s.max_new_tokens, "temperature": s.temperature, "top_p": s.top_p, "seed": s.seed}
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


def problem_program(problem: Problem, prompt: str, scfg: SamplingConfig, strategy: str, lcfg: Any,
                    run_id: str, ground_truth: bool) -> Program[dict[str, list[dict]]]:
    """Sample the problem's solutions, label their steps, and return the rows of its tables."""
    if has_given_solution(problem):
        sampled = given_solutions(problem, scfg, judge)
    else:
        sampled = yield from sample_solutions(problem, prompt, scfg, judge)
    pseudo = None if has_given_solution(problem) else with_pseudo_gold(problem, sampled, judge)  # open prompts
    problem = pseudo or problem
    if ground_truth and problem.source == "arith":  # the sim engine's solutions: the exact first wrong step is known
        for sol in sampled.solutions:
            sol.true_first_error = arith.first_error(problem.question, sol.text, scfg.delimiter)
    paths = [s.path for s in sampled.solutions]
    result = yield from STRATEGIES[strategy].label(sampled.tree, paths, problem, prompt, lcfg, judge)
    out = rows(sampled.tree, result, run_id, sampled.solutions)
    if pseudo is not None:
        mark_gold_source(out["step_labels"], PSEUDO_GOLD)
    out["problems"] = [{"run_id": run_id, "problem_id": problem.problem_id, "source": problem.source,
                        "question": problem.question, "gold_answer": problem.gold_answer,
                        "meta_json": problem.meta_json()}]
    if result.filtered:
        out["rejects"] = [reject_row("label", problem.problem_id, problem.question,
                                     "filtered: probe rollouts all right or all wrong")]
    return out


def execute(cfg: RunConfig, run_id: str | None = None, resume: bool = False, progress: bool = True,
            ray_address: str | None = None, report: bool = True) -> RunSummary:
    """Run (or resume) one config end to end; returns the summary. Config errors raise ``ConfigError``."""
    problems, load_rejects = load_inputs(cfg)
    try:
        lcfg = make_config(cfg.labeling.strategy, labeling_options(cfg))
    except (ValueError, TypeError) as err:
        raise ConfigError(f"config error: labeling.options: {err}") from None
    scfg = sampling_config(cfg)
    spec = actor_spec(cfg)
    run_id = run_id or new_run_id(cfg)
    root = Path(cfg.storage.root).resolve()
    summary = RunSummary(run_id=run_id, root=str(root), replicas=cfg.engine.replicas)
    start = time.perf_counter()
    start_run(root, run_id, cfg.model_dump(mode="json"),
              model=cfg.engine.model if cfg.engine.backend != "sim" else "sim", engine=cfg.engine.backend,
              code_version=code_version())
    try:
        _execute(cfg, problems, load_rejects, scfg, lcfg, spec, run_id, root, summary, resume, progress,
                 ray_address)
    except BaseException as err:
        summary.wall_s = time.perf_counter() - start
        fail_run(root, run_id, f"{type(err).__name__}: {err}", summary.stats())
        raise
    summary.mined = mine_outputs(cfg, root, run_id)
    summary.validation = validate_run(root, run_id)
    summary.wall_s = time.perf_counter() - start
    finish_run(root, run_id, summary.stats())
    with Catalog(root):  # refresh the catalog file so `cd tracemill_data && duckdb catalog.duckdb` sees this run
        pass
    if report:
        from pipelines.report import write_report

        summary.report = str(write_report(root, run_id))
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


def _execute(cfg: RunConfig, problems: list[Problem], load_rejects: list[dict], scfg: SamplingConfig,
             lcfg: Any, spec: ActorSpec, run_id: str, root: Path, summary: RunSummary, resume: bool,
             progress: bool, ray_address: str | None) -> None:
    shard_size = cfg.storage.shard_size
    shards = [problems[i:i + shard_size] for i in range(0, len(problems), shard_size)]
    names = [f"shard-{i:06d}" for i in range(len(shards))]
    writer = ShardWriter(root, run_id)
    done = writer.committed() if resume else set()
    if load_rejects:
        writer.commit("load-rejects", {"rejects": load_rejects})
    summary.rejects += len(load_rejects)
    todo = [(name, shard) for name, shard in zip(names, shards, strict=True) if name not in done]
    summary.skipped_shards = len(shards) - len(todo)
    if not todo:
        return

    started_ray = connect_ray(ray_address if ray_address is not None else cfg.ray.address, cfg.ray.num_cpus)
    pool = EnginePool.launch(spec, cfg.engine.replicas, PoolConfig(max_retries=cfg.ray.max_retries))
    try:
        messages = [prompt_messages(p, scfg) for _, shard in todo for p in shard]
        prompts = dict(zip([p.problem_id for _, shard in todo for p in shard], pool.apply_chat_template(messages), strict=True))
        shard_of = {p.problem_id: name for name, shard in todo for p in shard}
        left = {name: len(shard) for name, shard in todo}
        buffers: dict[str, dict[str, list[dict]]] = {name: {} for name, _ in todo}
        ground_truth = cfg.engine.backend == "sim"

        def programs() -> Iterator[tuple[str, Program[Any]]]:
            for _, shard in todo:
                for p in shard:
                    yield p.problem_id, problem_program(p, prompts[p.problem_id], scfg, cfg.labeling.strategy,
                                                        lcfg, run_id, ground_truth)

        with _progress(progress) as bar:
            task = bar.add_task("problems", total=sum(left.values()))

            def finish_problem(pid: str, out: dict[str, list[dict]]) -> None:
                name = shard_of[pid]
                for table, table_rows in out.items():
                    buffers[name].setdefault(table, []).extend(table_rows)
                summary.problems += 1
                summary.solutions += len(out.get("solutions", []))
                summary.correct_solutions += sum(bool(s["correct"]) for s in out.get("solutions", []))
                summary.steps_labeled += len(out.get("step_labels", []))
                summary.rollouts += len(out.get("rollouts", []))
                summary.rejects += len(out.get("rejects", []))
                _problem_finished(name)

            def fail_problem(pid: str, error: str) -> None:
                name = shard_of[pid]
                buffers[name].setdefault("rejects", []).append(reject_row("generate", pid, pid, error))
                summary.failed_problems += 1
                summary.rejects += 1
                _problem_finished(name)

            def _problem_finished(name: str) -> None:
                bar.advance(task)
                left[name] -= 1
                if left[name] == 0:
                    writer.commit(name, buffers.pop(name))

            start = time.perf_counter()
            run_programs_async(programs(), pool, on_done=finish_problem, on_failed=fail_problem,
                               max_active=max(64, 8 * cfg.engine.replicas))
            summary.search_wall_s += time.perf_counter() - start
        summary.meter.add(pool.stats())
        actor_stats = [s for s in pool.actor_stats() if s]
        summary.engine_busy_per_actor_s = [s.get("engine_s", 0.0) for s in actor_stats]
        summary.engine_busy_s += sum(summary.engine_busy_per_actor_s)
        summary.engine_call_s += sum(s.get("call_s", 0.0) for s in actor_stats)
    finally:
        pool.shutdown()
        if started_ray:  # a Ray this run started ends with it; a joined cluster stays up
            ray.shutdown()


def connect_ray(address: str, num_cpus: int | None) -> bool:
    """Join ``address`` (or the cluster a Ray job runs in), else start a local Ray without a dashboard.

    Returns True when this call started a local Ray (the caller shuts it down).
    """
    if ray.is_initialized():
        return False
    joining = bool(address or os.environ.get("RAY_ADDRESS"))
    # "local" starts a fresh Ray even when another one runs on this machine (None would join that one)
    ray.init(address=address or (None if joining else "local"), include_dashboard=None if joining else False,
             num_cpus=None if joining else num_cpus, log_to_driver=False, configure_logging=False)
    return not joining


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
