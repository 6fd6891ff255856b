"""Driver-side pool of engine actors: routing, micro-batching, retries — every ``ray.get``/``ray.wait`` is here.

Routing: a request goes to the actor that owns its ``group`` (the problem id) on a consistent-hash ring with
virtual nodes, so one problem's prefixes land in one engine's prefix cache, and adding or losing an actor
moves only that actor's share of groups. When the owner has far more requests in flight than the least
loaded actor (``overload_factor``), the request spills to the least loaded one instead.

Batching: ``submit`` only queues; queued requests go out as ONE call per actor when the driver next waits,
so many problems resuming at once cost one Ray round trip per actor rather than one per problem.

Faults: a call that fails (the actor died, its node left, the engine raised) is resubmitted request by
request — same ``request_key`` and seed, so the same sample — up to ``max_retries`` times, avoiding the
actor that failed; a failed actor is probed until Ray has restarted it. While NO actor is healthy (the only
engine is restarting, which takes a vLLM engine tens of seconds) a resubmitted request is parked, not sent,
and goes out once a probe finds an actor back — so a restart does not burn its attempts — unless no actor
comes back within ``max_unhealthy_s``. An engine error in a call shared by
many requests re-sends each of them in a call of its own without spending an attempt, so one bad request
cannot use up its neighbours' retries. Requests are deduplicated by
``request_key`` while in flight, so each is computed once however many tickets ask for it. When retries
run out the ticket completes with a ``GenerationFailed`` instead of results, and the program driver
(``search.program.ProgramDriver``) reports that problem as failed while the rest of the run goes on.

Example:
    >>> pool = EnginePool.launch(ActorSpec(backend="sim"), num_actors=2)  # doctest: +SKIP
    >>> results = pool.generate([GenRequest("k", "1+1=", group="p1")])  # doctest: +SKIP
"""

from __future__ import annotations

import bisect
import hashlib
import time
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import RayActorError

from cluster.actors import ActorSpec, launch_actor
from cluster.engine import GenRequest, GenResult
from cluster.requests import Usage


class GenerationFailed(RuntimeError):
    """A request still failed after ``max_retries`` resubmissions."""

    def __init__(self, request_key: str, attempts: int, error: str) -> None:
        super().__init__(f"request {request_key} failed after {attempts} attempts: {error}")
        self.request_key = request_key
        self.attempts = attempts
        self.error = error


@dataclass(frozen=True)
class PoolConfig:
    max_retries: int = 3  # resubmissions per request after its call failed
    virtual_nodes: int = 64  # ring points per actor; more points spread groups more evenly
    overload_factor: float = 2.0  # spill when owner in-flight > factor * least in-flight + overload_slack
    overload_slack: int = 16  # requests; keeps light loads on their owner (cache hits beat balance there)
    max_call_requests: int = 256  # requests per actor call; more are split so the actor can start sooner
    probe_interval_s: float = 0.5  # how often a failed, unreachable actor is probed again
    max_unhealthy_s: float = 900.0  # parked requests fail when no actor is healthy for this long

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.virtual_nodes < 1 or self.max_call_requests < 1:
            raise ValueError("max_retries >= 0, virtual_nodes >= 1 and max_call_requests >= 1 required")
        if self.overload_factor < 1:
            raise ValueError("overload_factor must be >= 1")


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class HashRing:
    """Consistent hashing over member indices, with ``virtual_nodes`` points per member."""

    def __init__(self, members: Iterable[int], virtual_nodes: int) -> None:
        points = sorted((_hash(f"{m}#{v}"), m) for m in members for v in range(virtual_nodes))
        self._hashes = [h for h, _ in points]
        self._members = [m for _, m in points]
        self._size = len(set(self._members))

    def walk(self, key: str) -> Iterator[int]:
        """Members in ring order starting at ``key``'s point, each once: the owner first, then fallbacks."""
        start = bisect.bisect(self._hashes, _hash(key))
        seen: set[int] = set()
        for i in range(len(self._members)):
            member = self._members[(start + i) % len(self._members)]
            if member not in seen:
                seen.add(member)
                yield member
                if len(seen) == self._size:
                    return


@dataclass
class ActorCounters:
    """What this pool sent one actor and got back; ``usage`` counts each delivered result once."""

    calls: int = 0
    sent: int = 0  # requests sent (retries included)
    failed: int = 0  # requests whose call failed on this actor
    spilled: int = 0  # requests routed here although another actor owned their group
    usage: Usage = field(default_factory=Usage)  # completed requests and their tokens


@dataclass
class _Ticket:
    results: list[GenResult | None]
    remaining: int


@dataclass
class _Call:
    actor: int
    keys: list[str]


@dataclass
class _Pending:
    request: GenRequest
    waiters: list[tuple[int, int]]  # (ticket, index in that ticket)
    attempts: int = 0
    solo: bool = False  # sent in a call of its own (after an engine error in a shared call)


Outcome = list[GenResult] | GenerationFailed


class EnginePool:
    """Routes request batches to engine actors and collects results as they complete."""

    def __init__(self, actors: list[Any], config: PoolConfig | None = None) -> None:
        if not actors:
            raise ValueError("an EnginePool needs at least one actor")
        self.config = config or PoolConfig()
        self.actors = list(actors)
        self.counters = [ActorCounters() for _ in self.actors]
        self._ring = HashRing(range(len(self.actors)), self.config.virtual_nodes)
        self._in_flight = [0] * len(self.actors)
        self._healthy = [True] * len(self.actors)
        self._probes: dict[ray.ObjectRef, int] = {}
        self._probe_due: dict[int, float] = {}  # unhealthy actor -> when to probe it next
        self._parked: dict[str, tuple[float, Exception]] = {}  # key -> (since, last error): no healthy actor
        self._pending: dict[str, _Pending] = {}  # request_key -> in-flight request
        self._outbox: dict[int, list[str]] = {}
        self._calls: dict[ray.ObjectRef, _Call] = {}
        self._tickets: dict[int, _Ticket] = {}
        self._done: dict[int, Outcome] = {}
        self._next_ticket = 0
        self._owned = False

    @classmethod
    def launch(cls, spec: ActorSpec, num_actors: int, config: PoolConfig | None = None) -> EnginePool:
        """Start ``num_actors`` engine actors from ``spec``; ``shutdown`` kills them."""
        pool = cls([launch_actor(spec, i) for i in range(num_actors)], config)
        pool._owned = True
        return pool

    # -- public verbs ---------------------------------------------------------------------------------

    def submit(self, requests: list[GenRequest]) -> int:
        """Queue ``requests``; returns a ticket that ``wait`` reports once all their results are in."""
        ticket = self._next_ticket
        self._next_ticket += 1
        if not requests:
            self._done[ticket] = []
            return ticket
        self._tickets[ticket] = _Ticket([None] * len(requests), len(requests))
        for index, req in enumerate(requests):
            pending = self._pending.get(req.request_key)
            if pending is not None:  # already in flight: share its result
                pending.waiters.append((ticket, index))
                continue
            self._pending[req.request_key] = _Pending(req, [(ticket, index)])
            self._route(req.request_key)
        return ticket

    def wait(self, tickets: Collection[int] | None = None, timeout: float | None = None) -> list[tuple[int, Outcome]]:
        """Block until at least one of ``tickets`` (default: any) is complete; return every complete one.

        Each outcome is the ticket's results in request order, or ``GenerationFailed``. Returns ``[]`` on
        timeout, or when nothing that could complete is in flight.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        self._flush()
        while not self._ready(tickets) and (self._calls or self._parked):
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if self._probe_due:  # wake up in time to probe failed actors again
                interval = self.config.probe_interval_s
                remaining = interval if remaining is None else min(remaining, interval)
            refs = [*self._calls, *self._probes]
            if refs:
                ray.wait(refs, num_returns=1, timeout=remaining)
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
                for ref in ready:
                    if ref in self._probes:
                        self._finish_probe(ref)
                    else:
                        self._finish_call(ref)
            else:  # only parked requests, and the next probe is not due yet
                time.sleep(self.config.probe_interval_s if remaining is None else remaining)
            self._start_due_probes()
            self._expire_parked()
            self._flush()
            if deadline is not None and time.monotonic() >= deadline:
                break
        return [(t, self._done.pop(t)) for t in self._ready(tickets)]

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        """Blocking: results for ``requests`` in order; raises ``GenerationFailed`` when retries run out."""
        ticket = self.submit(requests)
        while True:
            done = self.wait([ticket])
            if not done and not self._calls and not self._parked:
                raise RuntimeError(f"ticket {ticket} waits on results that can no longer arrive")
            for _, outcome in done:
                if isinstance(outcome, GenerationFailed):
                    raise outcome
                return outcome

    def apply_chat_template(self, conversations: list[list[dict[str, str]]]) -> list[str]:
        """Render conversations with the engines' chat template (all actors host the same model).

        Asks one actor after another; an actor that died (or is restarting) is skipped, and while none
        answers the round is tried again every ``probe_interval_s`` for up to ``max_unhealthy_s``.
        """
        deadline = time.monotonic() + self.config.max_unhealthy_s
        while True:
            for actor in self.actors:
                try:
                    return ray.get(actor.apply_chat_template.remote(conversations))
                except RayActorError as err:
                    last = err
            if time.monotonic() > deadline:
                raise RuntimeError(f"no engine actor answered for {self.config.max_unhealthy_s:.0f} s to "
                                   f"render prompts: {last}")
            time.sleep(self.config.probe_interval_s)

    def stats(self) -> dict[str, Any]:
        """Per-actor counters and totals: ``usage`` (a ``Usage``: completed requests and their tokens, each
        result once), ``calls``, ``retried`` (requests resubmitted after their call failed)."""
        per_actor = [{"actor": i, "healthy": self._healthy[i], "in_flight": self._in_flight[i], **vars(c)}
                     for i, c in enumerate(self.counters)]
        usage = Usage()
        for c in self.counters:
            usage.merge(c.usage)
        return {"actors": per_actor, "usage": usage, "prefix_hit_rate": usage.prefix_hit_rate,
                "calls": sum(c.calls for c in self.counters), "retried": sum(c.failed for c in self.counters)}

    def actor_stats(self) -> list[dict[str, Any] | None]:
        """Each actor's own ``stats()`` (None for an actor that cannot answer now)."""
        out: list[dict[str, Any] | None] = []
        for actor in self.actors:
            try:
                out.append(ray.get(actor.stats.remote(), timeout=self.config.probe_interval_s * 10))
            except Exception:  # a dead or restarting actor has no stats to give
                out.append(None)
        return out

    def shutdown(self) -> None:
        """Kill the actors this pool launched (actors passed in belong to the caller)."""
        if self._owned:
            for actor in self.actors:
                ray.kill(actor, no_restart=True)

    # -- routing and calls ----------------------------------------------------------------------------

    def _route(self, key: str, avoid: int | None = None, err: Exception | None = None) -> None:
        if not any(self._healthy):  # every actor is down (restarting): park until a probe finds one back
            self._parked.setdefault(key, (time.monotonic(), err or RuntimeError("no healthy engine actor")))
            return
        req = self._pending[key].request
        usable = {i for i, ok in enumerate(self._healthy) if ok and i != avoid} or \
            {i for i, ok in enumerate(self._healthy) if ok} or set(range(len(self.actors)))
        owner = next(m for m in self._ring.walk(req.group or key) if m in usable)
        least = min(usable, key=self._in_flight.__getitem__)
        target = owner
        if self._in_flight[owner] > self.config.overload_factor * self._in_flight[least] + \
                self.config.overload_slack:
            target = least
            self.counters[least].spilled += 1
        self._outbox.setdefault(target, []).append(key)
        self._in_flight[target] += 1

    def _flush(self) -> None:
        step = self.config.max_call_requests
        for actor, keys in self._outbox.items():
            shared = [k for k in keys if not self._pending[k].solo]
            chunks = [shared[i:i + step] for i in range(0, len(shared), step)]
            chunks += [[k] for k in keys if self._pending[k].solo]
            for chunk in chunks:
                ref = self.actors[actor].generate.remote([self._pending[k].request for k in chunk])
                self._calls[ref] = _Call(actor, chunk)
                self.counters[actor].calls += 1
                self.counters[actor].sent += len(chunk)
        self._outbox = {}

    def _finish_call(self, ref: ray.ObjectRef) -> None:
        call = self._calls.pop(ref)
        self._in_flight[call.actor] -= len(call.keys)
        try:
            results = ray.get(ref)
        except Exception as err:  # actor death, node loss or an engine error: resubmit each request
            self.counters[call.actor].failed += len(call.keys)
            if isinstance(err, RayActorError):
                self._mark_unhealthy(call.actor)
            elif len(call.keys) > 1:  # an engine error: find the culprit; bystanders lose no attempt
                for key in call.keys:
                    self._pending[key].solo = True
                    self._route(key)
                return
            for key in call.keys:
                self._retry(key, call.actor, err)
            return
        counters = self.counters[call.actor]
        for key, res in zip(call.keys, results, strict=True):
            if res.request_key != key:
                raise RuntimeError(f"engine answered {res.request_key} for request {key}")
            counters.usage.add(res)
            self._deliver(key, res)

    def _deliver(self, key: str, result: GenResult) -> None:
        for ticket_id, index in self._pending.pop(key).waiters:
            ticket = self._tickets.get(ticket_id)
            if ticket is None:  # the ticket already failed on another request
                continue
            ticket.results[index] = result
            ticket.remaining -= 1
            if ticket.remaining == 0:
                del self._tickets[ticket_id]
                self._done[ticket_id] = ticket.results  # type: ignore[assignment]  # all filled now

    def _retry(self, key: str, failed_actor: int, err: Exception) -> None:
        pending = self._pending[key]
        pending.attempts += 1
        if pending.attempts <= self.config.max_retries:
            self._route(key, avoid=failed_actor, err=err)
            return
        self._fail(key, GenerationFailed(key, pending.attempts, f"{type(err).__name__}: {err}"))

    def _fail(self, key: str, failure: GenerationFailed) -> None:
        for ticket_id, _ in self._pending.pop(key).waiters:
            if self._tickets.pop(ticket_id, None) is not None:
                self._done[ticket_id] = failure

    def _ready(self, tickets: Collection[int] | None) -> list[int]:
        if tickets is None:
            return list(self._done)
        return [t for t in tickets if t in self._done]

    # -- health ---------------------------------------------------------------------------------------

    def _mark_unhealthy(self, actor: int) -> None:
        if self._healthy[actor]:
            self._healthy[actor] = False
            self._probe_due[actor] = 0.0

    def _start_due_probes(self) -> None:
        now = time.monotonic()
        for actor, due in list(self._probe_due.items()):
            if due <= now:
                del self._probe_due[actor]
                self._probes[self.actors[actor].stats.remote()] = actor

    def _finish_probe(self, ref: ray.ObjectRef) -> None:
        actor = self._probes.pop(ref)
        try:
            ray.get(ref)
        except Exception:  # still dead or unreachable: look again later
            self._probe_due[actor] = time.monotonic() + self.config.probe_interval_s
            return
        self._healthy[actor] = True
        parked, self._parked = self._parked, {}
        for key in parked:  # an actor is back: send what waited for one
            self._route(key)

    def _expire_parked(self) -> None:
        now = time.monotonic()
        for key, (since, err) in list(self._parked.items()):
            if now - since > self.config.max_unhealthy_s:
                del self._parked[key]
                self._fail(key, GenerationFailed(key, self._pending[key].attempts,
                                                 f"no healthy engine for {self.config.max_unhealthy_s:.0f} s "
                                                 f"after {type(err).__name__}: {err}"))
