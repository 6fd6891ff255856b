"""Search workers: Ray actors that run the search programs of whole shards and commit each shard themselves.

Why: the driver of a million-problem run must not hold a million problems' rows, nor run every search
program on one core. A ``SearchWorker`` is given shards (a name and its problems) by the driver, renders
their prompts with the engines' chat template, drives their programs (sample solutions, label steps)
against the SHARED engine actors through its own ``EnginePool`` over the same handles (one problem's
requests go to one engine by the pool's consistent hashing, the same ring in every worker), and commits
each shard with ``ShardWriter`` as its last problem finishes. It reports only a ``ShardDone`` of counters.

Exactly once: the manifest is the record. A shard already committed (by a worker that died before
reporting it, or by a resumed run) is reported ``skipped`` and not searched again; ``ShardWriter``'s
``flock`` makes commits of different shards from several worker processes safe, and a second commit of
one shard a no-op.

The actor is threaded: one thread searches (the pool is not thread-safe, so only it touches the pool),
while ``feed``, ``done`` and ``stats`` are answered on Ray's other threads through two queues. An exception
raised by a search program ends the search thread and is raised by the next ``done`` (the run fails, as it
would in-process); a worker process that dies is the driver's to handle (``pipelines.run``).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from cluster import sim_code
from cluster.pool import EnginePool, PoolConfig
from cluster.problems.given import has_given_solution
from cluster.problems.problem import Problem
from search.labeling import STRATEGIES, LabelResult, rows
from search.labeling.base import mark_gold_source, with_pseudo_gold
from search.labeling.judged_gold import Critic, critic_template, judged_gold
from search.program import Program, ProgramDriver
from search.sampling import SamplingConfig, given_solutions, prompt_messages, sample_solutions
from search.tool_loop import ToolPool
from storage.rejects import reject_row
from storage.shards import ShardWriter
from verifier.answers import judge
from verifier.judge_llm import JudgeConfig

WORKER_NUM_CPUS = 0  # reserved per worker: none, so workers fit next to engines that took every CPU (their count is `ray.search_workers`)
THREADS = 4  # the search thread's feeders: feed, done and stats calls answered concurrently


@dataclass(frozen=True)
class SearchJob:
    """What every worker of one run needs to turn a shard's problems into committed rows."""

    run_id: str
    root: str
    sampling: SamplingConfig
    strategy: str
    labeling: Any  # the strategy's config object
    ground_truth: bool  # the sim engine: the exact first wrong step of each solution is known
    pool: PoolConfig
    max_active: int  # programs waiting on results at once, per worker
    open_judge: JudgeConfig | None = None  # the LLM judge of open prompts; None: self-consistency


@dataclass
class ShardDone:
    """Counters of one shard a worker finished (committed, or found committed: ``skipped``)."""

    name: str
    problems: int = 0
    failed_problems: int = 0
    solutions: int = 0
    correct_solutions: int = 0
    steps_labeled: int = 0
    rollouts: int = 0
    rejects: int = 0
    skipped: bool = False


@dataclass
class _Shard:
    done: ShardDone
    left: int
    tables: dict[str, list[dict]] = field(default_factory=dict)


def problem_program(problem: Problem, prompt: str, scfg: SamplingConfig, strategy: str, lcfg: Any,
                    run_id: str, ground_truth: bool, critic: Critic | None = None) -> Program[dict[str, list[dict]]]:
    """Sample the problem's solutions, label their steps, and return the rows of its tables.

    An open prompt is labeled against a pseudo-gold: the LLM judge's (``critic``) or self-consistency's.
    One the judge accepts no solution of is stored unlabeled, with a ``rejects`` row saying why.
    """
    pseudo, rejected = None, ""
    if has_given_solution(problem):
        sampled = given_solutions(problem, scfg, judge)
    else:
        sampled = yield from sample_solutions(problem, prompt, scfg, judge)
        if critic is not None and not problem.gold_answer:
            judged = yield from judged_gold(problem, sampled, judge, critic)
            problem, rejected = judged.problem, judged.reason
            pseudo = None if rejected else problem
        else:
            pseudo = with_pseudo_gold(problem, sampled, judge)  # None for a problem with a gold answer
    problem = pseudo or problem
    if ground_truth and problem.source == "arith":  # the sim engine's solutions: the exact first wrong step is known
        for sol in sampled.solutions:
            sol.true_first_error = sim_code.first_error(problem.question, sol.text, scfg.delimiter)
    paths = [s.path for s in sampled.solutions]
    if rejected:  # no answer to judge rollouts against
        result = LabelResult(strategy, {}, [None] * len(paths))
    else:
        result = yield from STRATEGIES[strategy].label(sampled.tree, paths, problem, prompt, lcfg, judge)
    out = rows(sampled.tree, result, run_id, sampled.solutions)
    if pseudo is not None:
        mark_gold_source(out["step_labels"], pseudo.meta["gold_source"])
    out["problems"] = [{"run_id": run_id, "problem_id": problem.problem_id, "source": problem.source,
                        "question": problem.question, "gold_answer": problem.gold_answer,
                        "meta_json": problem.meta_json()}]
    if result.filtered or rejected:
        out["rejects"] = [reject_row("label", problem.problem_id, problem.question,
                                     rejected or "filtered: probe rollouts all right or all wrong")]
    return out


class SearchWorker:
    """Runs shards' search programs and commits the shards. Wrapped with ``ray.remote`` by ``launch_worker``."""

    def __init__(self, job: SearchJob, engines: list[Any]) -> None:
        self._job = job
        self._pool = EnginePool(engines, job.pool)
        self._writer = ShardWriter(job.root, job.run_id)
        # code blocks of tool steps run in this worker's sandbox threads, beside its engine calls
        self._tools = ToolPool(self._pool, job.sampling.tools) if job.sampling.tools.python else None
        self._driver = ProgramDriver(self._tools or self._pool, self._finished, self._failed)
        self._inbox: queue.Queue[tuple[str, list[Problem]]] = queue.Queue()
        self._outbox: queue.Queue[ShardDone] = queue.Queue()
        self._ready: deque[tuple[str, Any]] = deque()  # programs of accepted shards not started yet
        self._shard_of: dict[str, _Shard] = {}  # problem id -> its shard, while the problem runs
        self._critic: Critic | None = None  # the open-prompt judge, once the engines gave its chat template
        self._error: BaseException | None = None
        threading.Thread(target=self._search, name="search", daemon=True).start()

    # -- called by the driver -----------------------------------------------------------------------

    def feed(self, name: str, problems: list[Problem]) -> None:
        """Queue a shard; its ``ShardDone`` comes out of ``done`` once it is committed."""
        self._inbox.put((name, problems))

    def done(self, timeout_s: float = 1.0) -> list[ShardDone]:
        """Shards finished since the last call, waiting up to ``timeout_s`` for the first one."""
        out: list[ShardDone] = []
        try:
            out.append(self._outbox.get(timeout=timeout_s))
            while True:
                out.append(self._outbox.get_nowait())
        except queue.Empty:
            pass
        if self._error is not None:
            raise self._error
        return out

    def close(self) -> None:
        """Remove this worker's staging folder (the driver calls it once every shard is reported)."""
        self._writer.close()
        if self._tools is not None:
            self._tools.close()

    def stats(self) -> dict[str, Any]:
        """This worker's pool counters (requests, tokens, retries) and sandbox calls since its process started,
        and its node."""
        return {"node_id": ray.get_runtime_context().get_node_id(), **self._pool.stats(),
                "tool_calls": self._tools.calls if self._tools is not None else 0}

    # -- the search thread --------------------------------------------------------------------------

    def _search(self) -> None:
        try:
            while True:
                self._fill()
                self._driver.step()
        except BaseException as err:  # raised to the driver by the next ``done``
            self._error = err
            self._outbox.put(ShardDone("", skipped=True))  # wake a waiting ``done``

    def _fill(self) -> None:
        """Start programs up to ``max_active``; block for a shard only while nothing is in flight."""
        while self._driver.active < self._job.max_active:
            if self._ready:
                self._driver.start(*self._ready.popleft())
                continue
            try:
                name, problems = self._inbox.get(block=not self._driver.active)
            except queue.Empty:
                return
            self._accept(name, problems)

    def _accept(self, name: str, problems: list[Problem]) -> None:
        if name in self._writer.committed():
            self._outbox.put(ShardDone(name, skipped=True))
            return
        job = self._job
        prompts = self._pool.apply_chat_template([prompt_messages(p, job.sampling) for p in problems])
        if job.open_judge is not None and self._critic is None:
            self._critic = Critic(job.open_judge, critic_template(self._pool.apply_chat_template))
        shard = _Shard(ShardDone(name), len(problems))
        for problem, prompt in zip(problems, prompts, strict=True):
            self._shard_of[problem.problem_id] = shard
            self._ready.append((problem.problem_id, problem_program(
                problem, prompt, job.sampling, job.strategy, job.labeling, job.run_id, job.ground_truth,
                self._critic)))

    def _finished(self, problem_id: str, out: dict[str, list[dict]]) -> None:
        shard = self._shard_of.pop(problem_id)
        for table, table_rows in out.items():
            shard.tables.setdefault(table, []).extend(table_rows)
        d = shard.done
        d.problems += 1
        d.solutions += len(out.get("solutions", []))
        d.correct_solutions += sum(bool(s["correct"]) for s in out.get("solutions", []))
        d.steps_labeled += len(out.get("step_labels", []))
        d.rollouts += len(out.get("rollouts", []))
        d.rejects += len(out.get("rejects", []))
        self._one_less(shard)

    def _failed(self, problem_id: str, error: str) -> None:
        shard = self._shard_of.pop(problem_id)
        shard.tables.setdefault("rejects", []).append(reject_row("generate", problem_id, problem_id, error))
        shard.done.failed_problems += 1
        shard.done.rejects += 1
        self._one_less(shard)

    def _one_less(self, shard: _Shard) -> None:
        shard.left -= 1
        if shard.left == 0:  # the shard's rows go to disk and leave this process
            shard.done.skipped = not self._writer.commit(shard.done.name, shard.tables)
            shard.tables = {}
            self._outbox.put(shard.done)


def launch_worker(job: SearchJob | ray.ObjectRef, engines: list[Any]) -> ray.actor.ActorHandle:
    """Start one search worker, spread over the nodes; Ray restarts it if its process or node dies (calls in
    flight then fail, and the driver gives its unreported shards out again). Pass ``job`` as an ObjectRef
    the caller holds (``ray.put``) so a restart can still read it."""
    remote_cls = ray.remote(SearchWorker).options(
        num_cpus=WORKER_NUM_CPUS, max_restarts=-1, max_task_retries=0, max_concurrency=THREADS,
        scheduling_strategy="SPREAD")
    return remote_cls.remote(job, engines)


MAX_SHARD_ATTEMPTS = 4  # a shard whose worker died this many times fails the run instead of looping
PROBE_S = 0.5  # how often a dead (restarting) worker is asked whether it is back


def run_shards(workers: list[Any], shards: Iterator[tuple[str, list[Problem]]], depth: int,
               on_done: Callable[[ShardDone], None]) -> int:
    """Stream ``shards`` to ``workers`` until every one is reported; returns how many were given out again.

    Each live worker holds at most ``depth`` unreported shards (the driver's memory is bounded by
    ``depth x workers`` shards of problems, never rows); shards go out round-robin, then to whichever worker
    has room. A worker that dies loses what it held: those shards go out again, first come first served, and
    the dead worker gets nothing until a probe finds Ray has restarted it; the manifest keeps each commit
    once. ``on_done`` gets each shard once.
    """
    held: list[dict[str, tuple[list[Problem], int]]] = [{} for _ in workers]  # name -> (problems, attempt)
    up = [True] * len(workers)
    redo: deque[tuple[str, list[Problem], int]] = deque()
    polls: dict[ray.ObjectRef, tuple[int, bool]] = {}  # pending call -> (worker, whether it is a probe)
    probe_at: dict[int, float] = {}  # dead worker -> when to probe it
    exhausted = False
    redone = 0

    def next_shard() -> tuple[str, list[Problem], int] | None:
        nonlocal exhausted
        if redo:
            return redo.popleft()
        nxt = None if exhausted else next(shards, None)
        exhausted = nxt is None
        return None if nxt is None else (*nxt, 1)

    def fill() -> None:
        """Round-robin over the live workers with room until they are full or there is nothing to give."""
        given = True
        while given:
            given = False
            for i, worker in enumerate(workers):
                if not up[i] or len(held[i]) >= depth:
                    continue
                nxt = next_shard()
                if nxt is None:
                    return
                name, problems, attempt = nxt
                if attempt > MAX_SHARD_ATTEMPTS:
                    raise RuntimeError(f"{name}: its search worker died {MAX_SHARD_ATTEMPTS} times")
                held[i][name] = (problems, attempt)
                worker.feed.remote(name, problems)
                given = True

    fill()
    polls.update({worker.done.remote(): (i, False) for i, worker in enumerate(workers)})
    while redo or any(held) or not exhausted:
        now = time.monotonic()
        for i in [i for i, at in probe_at.items() if at <= now]:
            del probe_at[i]
            polls[workers[i].stats.remote()] = (i, True)
        if not polls:  # every worker is down and no probe is due yet
            time.sleep(PROBE_S)
            continue
        ready, _ = ray.wait(list(polls), num_returns=1, timeout=PROBE_S if probe_at else None)
        for ref in ready:
            i, probe = polls.pop(ref)
            try:
                finished = ray.get(ref)
            except RayTaskError as err:  # the worker's search raised: a storage fault is the worker's own error
                if isinstance(err.cause, OSError):  # (ENOSPC, EROFS: one line in the CLI, the run marked failed)
                    raise err.cause from err
                raise
            except RayActorError:  # died (or restarting): what it had not reported goes out again
                redone += len(held[i])
                redo.extend((name, problems, attempt + 1) for name, (problems, attempt) in held[i].items())
                held[i] = {}
                up[i] = False
                probe_at[i] = time.monotonic() + PROBE_S
                continue
            if probe:
                up[i] = True
            else:
                for d in finished:
                    if held[i].pop(d.name, None) is not None:
                        on_done(d)
            polls[workers[i].done.remote()] = (i, False)
        fill()
    return redone
