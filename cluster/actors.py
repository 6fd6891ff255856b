"""``EngineActor``: a thin Ray actor around one engine backend, with many calls in flight.

The actor is async so concurrent ``generate`` calls (from many problems, routed here by the pool) overlap.
A synchronous engine gets them merged: calls that arrive while the engine is busy, or within
``batch_window_s`` of an idle engine, go out as ONE ``engine.generate`` batch, run on a single worker thread
(engines are not thread-safe) so the event loop keeps accepting calls. An engine with its own scheduler
(vLLM's continuous batching) exposes ``agenerate`` and is awaited directly, with no merging.

Busy time is honest for both kinds: ``engine_s`` is the UNION of the intervals in which at least one call
was inside the engine (``BusyClock``), so an engine serving many calls at once is never "busy" for longer
than the wall clock; ``call_s`` keeps the per-call sum (the two differ by how much calls overlapped).

Only the dataclasses of ``cluster.engine`` cross the actor boundary. Death handling is Ray's: the actor is
created with ``max_restarts`` so a crashed process (or a removed node) is restarted, and the driver-side
pool resubmits what was lost.

Example:
    >>> spec = ActorSpec(backend="sim", engine={"seed": 0})  # doctest: +SKIP
    >>> actor = launch_actor(spec)  # doctest: +SKIP
    >>> ray.get(actor.generate.remote([GenRequest("k", "1+1=")]))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from cluster.backends import build_engine
from cluster.engine import GenRequest, GenResult
from cluster.requests import Usage
from cluster.resources import Demand


@dataclass(frozen=True)
class ActorSpec:
    """How to build and place one engine actor. Unknown keys are a ``TypeError`` at construction."""

    backend: str  # a name in cluster.backends.BACKENDS, or "module:callable"
    engine: dict[str, Any] = field(default_factory=dict)  # the backend's own config
    num_cpus: float = 1.0  # per actor
    num_gpus: float = 0.0  # per actor; > 1 places one GPU bundle per device in a STRICT_PACK group (TP)
    memory: float = 0.0  # bytes of Ray's "memory" resource reserved per actor (0: none)
    resources: Mapping[str, float] = field(default_factory=dict)  # custom Ray resources per actor
    max_restarts: int = -1  # -1: Ray restarts a dead actor forever (the pool resubmits lost calls)
    max_task_retries: int = 0  # Ray-level call retries; 0 because the pool retries with its own budget
    max_concurrency: int = 1000  # calls in flight inside one actor
    batch_window_s: float = 0.002  # how long an idle sync engine waits to merge concurrent calls
    name_prefix: str = "engine"  # results get engine_id "<prefix>-<index>" (replacing the backend's)

    def __post_init__(self) -> None:
        if self.num_cpus < 0 or self.num_gpus < 0 or self.memory < 0:
            raise ValueError("num_cpus, num_gpus and memory must be >= 0")
        if any(v < 0 for v in self.resources.values()) or {"CPU", "GPU", "memory"} & set(self.resources):
            raise ValueError("resources holds custom resources (>= 0); CPU, GPU and memory have fields")
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if self.batch_window_s < 0:
            raise ValueError("batch_window_s must be >= 0")


@runtime_checkable
class AsyncEngine(Protocol):
    """An engine that schedules concurrent requests itself (vLLM); the actor awaits it directly."""

    async def agenerate(self, requests: list[GenRequest]) -> list[GenResult]: ...


def union_length(intervals: Iterable[tuple[float, float]]) -> float:
    """Total length covered by ``(start, end)`` intervals, overlaps counted once."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


class BusyClock:
    """The union of in-flight intervals, kept incrementally: busy while at least one call is in flight."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._active = 0
        self._since = 0.0
        self._busy = 0.0

    def enter(self) -> float:
        """A call starts; returns its start time."""
        now = self._clock()
        if self._active == 0:
            self._since = now
        self._active += 1
        return now

    def exit(self, started: float) -> float:
        """A call that ``enter`` returned ``started`` for ends; returns its own duration."""
        now = self._clock()
        self._active -= 1
        if self._active == 0:
            self._busy += now - self._since
        return now - started

    def busy_s(self) -> float:
        """Union busy time so far, the open interval included."""
        return self._busy + (self._clock() - self._since if self._active else 0.0)


@dataclass
class _Counters:
    calls: int = 0
    batches: int = 0
    errors: int = 0
    engine_s: float = 0.0  # union of the intervals with a call inside the engine (busy wall time)
    call_s: float = 0.0  # time inside engine calls summed per call (> engine_s when calls overlap)
    usage: Usage = field(default_factory=Usage)  # every result the engine produced (delivered or not)


class EngineActor:
    """Hosts one engine. Wrapped with ``ray.remote`` by ``launch_actor``; the class itself stays plain."""

    def __init__(self, spec: ActorSpec, engine_id: str) -> None:
        self._spec = spec
        self._engine_id = engine_id
        self._engine = build_engine(spec.backend, spec.engine)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._queue: list[tuple[list[GenRequest], asyncio.Future]] = []
        self._drainer: asyncio.Task | None = None
        self._counters = _Counters()
        self._busy = BusyClock()
        self._in_flight = 0
        self._incarnation = f"{os.getpid()}@{time.time_ns()}"  # a restarted actor is a new process

    async def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        """Results for ``requests``, in order; merged with concurrent calls into one engine batch."""
        self._counters.calls += 1
        self._in_flight += len(requests)
        try:
            if isinstance(self._engine, AsyncEngine):
                start = self._busy.enter()
                try:
                    results = await self._engine.agenerate(requests)
                finally:
                    self._counters.call_s += self._busy.exit(start)
                self._counters.batches += 1
                self._account(results)
            else:
                future = asyncio.get_running_loop().create_future()
                self._queue.append((requests, future))
                if self._drainer is None:
                    self._drainer = asyncio.create_task(self._drain())
                results = await future
        except Exception:
            self._counters.errors += 1
            raise
        finally:
            self._in_flight -= len(requests)
        for res in results:  # the actor is the engine instance the pool routes to (and whose cache hit)
            res.engine_id = self._engine_id
        return results

    async def _drain(self) -> None:
        """Run queued calls as merged batches until the queue is empty.

        When a merged batch raises, each call is run again on its own, so one bad request fails only the
        call that carried it, not every call that happened to share its batch.
        """
        await asyncio.sleep(self._spec.batch_window_s)
        while self._queue:
            calls, self._queue = self._queue, []
            try:
                results = await self._run([req for reqs, _ in calls for req in reqs])
            except Exception as err:
                if len(calls) == 1:
                    calls[0][1].set_exception(err)
                    continue
                for reqs, fut in calls:
                    try:
                        fut.set_result(await self._run(reqs))
                    except Exception as one_err:
                        fut.set_exception(one_err)
                continue
            pos = 0
            for reqs, fut in calls:
                fut.set_result(results[pos:pos + len(reqs)])
                pos += len(reqs)
        self._drainer = None

    async def _run(self, requests: list[GenRequest]) -> list[GenResult]:
        """One ``engine.generate`` batch on the engine thread, timed and counted."""
        start = self._busy.enter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._engine.generate, requests)
        finally:
            self._counters.call_s += self._busy.exit(start)
        if len(results) != len(requests):
            raise RuntimeError(f"engine returned {len(results)} results for {len(requests)} requests")
        self._counters.batches += 1
        self._account(results)
        return results

    def _account(self, results: list[GenResult]) -> None:
        for res in results:
            self._counters.usage.add(res)

    async def apply_chat_template(self, conversations: list[list[dict[str, str]]]) -> list[str]:
        """Prompts for many conversations in one call: the driver needs the engine's chat template."""
        return [self._engine.apply_chat_template(messages) for messages in conversations]

    async def stats(self) -> dict[str, Any]:
        """Counters since this process started, and which process that is (``incarnation``): they start again
        when Ray restarts the actor, so whoever sums them over a run (``cluster.monitor``) keys them by it."""
        c = self._counters
        c.engine_s = self._busy.busy_s()
        return {"engine_id": self._engine_id, "node_id": ray.get_runtime_context().get_node_id(),
                "incarnation": self._incarnation, "in_flight": self._in_flight, "calls": c.calls,
                "batches": c.batches, "errors": c.errors, "engine_s": c.engine_s, "call_s": c.call_s,
                **asdict(c.usage)}


def tensor_parallel(spec: ActorSpec) -> bool:
    """A multi-GPU engine: its actor runs inside a STRICT_PACK group of one bundle per GPU."""
    return spec.num_gpus > 1


def _tp_bundles(spec: ActorSpec) -> list[dict[str, float]]:
    """One ``{GPU: 1, CPU: 1}`` bundle per device; the actor's memory and custom resources ride on bundle 0."""
    bundles = [{"GPU": 1.0, "CPU": 1.0} for _ in range(int(spec.num_gpus))]
    bundles[0].update({k: v for k, v in {"memory": spec.memory, **spec.resources}.items() if v > 0})
    return bundles


def actor_demand(spec: ActorSpec, count: int) -> Demand:
    """What ``count`` actors of ``spec`` ask Ray for (``cluster.resources`` checks it before a launch)."""
    if tensor_parallel(spec):
        return Demand("engine actor", tuple(_tp_bundles(spec)), count, strategy="STRICT_PACK")
    return Demand("engine actor", ({"CPU": spec.num_cpus, "GPU": spec.num_gpus, "memory": spec.memory,
                                    **spec.resources},), count)


def actor_options(spec: ActorSpec) -> dict[str, Any]:
    """Ray options for one actor; a multi-GPU engine gets a STRICT_PACK placement group (one node).

    With tensor parallelism the actor itself holds no GPU and sits in bundle 0 (which carries its memory
    and custom resources); its engine (vLLM with the ``ray`` executor) starts one worker per bundle of the
    group it captured.
    """
    opts: dict[str, Any] = {
        "num_cpus": spec.num_cpus,
        "num_gpus": spec.num_gpus,
        "max_restarts": spec.max_restarts,
        "max_task_retries": spec.max_task_retries,
        "max_concurrency": spec.max_concurrency,
    }
    if spec.memory:
        opts["memory"] = spec.memory
    if spec.resources:
        opts["resources"] = dict(spec.resources)
    if tensor_parallel(spec):
        group = placement_group(_tp_bundles(spec), strategy="STRICT_PACK")
        opts["num_gpus"] = 0
        opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
            group, placement_group_bundle_index=0, placement_group_capture_child_tasks=True)
    return opts


def launch_actor(spec: ActorSpec, index: int = 0) -> ray.actor.ActorHandle:
    """Start one ``EngineActor`` (returns at once; the engine loads in the actor's constructor)."""
    remote_cls = ray.remote(EngineActor).options(**actor_options(spec))
    return remote_cls.remote(spec, f"{spec.name_prefix}-{index}")
