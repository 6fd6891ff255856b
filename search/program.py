"""Search logic as resumable programs, so one driver can batch requests across many problems.

A *program* handles one problem. It is a generator that yields a list of ``GenRequest`` whenever it needs
samples and receives the matching ``GenResult`` list (same order) back through ``send``; its return value
is the problem's output. Strategies never call an engine: whoever drives the programs decides how requests
are batched, routed to engines (in-process or Ray actors) and retried.

Two drivers live here: ``run_programs`` advances programs in lockstep against a blocking ``generate`` (an
in-process engine, tests), and ``ProgramDriver`` / ``run_programs_async`` advance each program as soon as ITS
results arrive from an ``EnginePool`` of engine actors (a run's search workers).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cluster.engine import GenRequest, GenResult
from cluster.pool import EnginePool, GenerationFailed

T = TypeVar("T")
Program = Generator[list[GenRequest], list[GenResult], T]
GenerateFn = Callable[[list[GenRequest]], list[GenResult]]


def run_program(program: Program[T], generate: GenerateFn) -> T:
    """Drive one program to completion with a blocking ``generate``."""
    return run_programs({"_": program}, generate)["_"]


def run_programs(programs: dict[str, Program[Any]], generate: GenerateFn,
                 on_done: Callable[[str, Any], None] | None = None) -> dict[str, Any]:
    """Drive many programs in lockstep: each round, every waiting program's requests go out in one call.

    ``generate`` sees the union of all pending requests, so a batching engine fills its batch across
    problems. ``on_done(key, result)`` is called as each program finishes (e.g. to write its shard).
    """
    results: dict[str, Any] = {}
    pending: dict[str, list[GenRequest]] = {}
    for key, prog in programs.items():
        _advance(key, prog, None, pending, results, on_done)
    while pending:
        batch = [(key, req) for key, reqs in pending.items() for req in reqs]
        outs = generate([req for _, req in batch])
        if len(outs) != len(batch):
            raise RuntimeError(f"engine returned {len(outs)} results for {len(batch)} requests")
        by_key: dict[str, list[GenResult]] = {}
        for (key, _), out in zip(batch, outs, strict=True):
            by_key.setdefault(key, []).append(out)
        pending = {}
        for key, outs_k in by_key.items():
            _advance(key, programs[key], outs_k, pending, results, on_done)
    return results


def _advance(key: str, prog: Program[Any], sent: list[GenResult] | None, pending: dict[str, list[GenRequest]],
             results: dict[str, Any], on_done: Callable[[str, Any], None] | None) -> None:
    try:
        reqs = prog.send(sent) if sent is not None else next(prog)
        while not reqs:  # a program may yield an empty list; answer it at once
            reqs = prog.send([])
        pending[key] = reqs
    except StopIteration as stop:
        results[key] = stop.value
        if on_done is not None:
            on_done(key, stop.value)


@dataclass
class ProgramsOutcome:
    results: dict[str, Any] = field(default_factory=dict)  # program key -> its return value (no on_done only)
    failed: dict[str, str] = field(default_factory=dict)  # program key -> why its generation failed


class ProgramDriver:
    """Advances search programs (see ``search.program``) against a pool, each as soon as ITS results arrive.

    ``start`` runs a program up to its first batch; ``step`` blocks until some batches complete and advances
    those programs. A finished program goes to ``on_done(key, value)``; one whose requests fail after all
    retries is closed and goes to ``on_failed(key, error)``; exceptions raised by a program itself propagate.
    Nothing is kept once reported, so a driver that runs for a million programs holds only the active ones.
    """

    def __init__(self, pool: EnginePool, on_done: Callable[[str, Any], None],
                 on_failed: Callable[[str, str], None]) -> None:
        self.pool = pool
        self._on_done = on_done
        self._on_failed = on_failed
        self._active: dict[int, tuple[str, Any]] = {}  # ticket -> (key, program waiting on it)

    @property
    def active(self) -> int:
        """Programs waiting on results."""
        return len(self._active)

    def start(self, key: str, program: Any) -> None:
        self._advance(key, program, None)

    def step(self) -> None:
        """Wait for at least one active program's results and advance every program whose results are in."""
        completed = self.pool.wait(self._active.keys())
        if not completed:
            raise RuntimeError(f"{len(self._active)} programs wait on results that can no longer arrive")
        for ticket, result in completed:
            key, prog = self._active.pop(ticket)
            if isinstance(result, GenerationFailed):
                prog.close()
                self._on_failed(key, str(result))
            else:
                self._advance(key, prog, result)

    def _advance(self, key: str, prog: Any, sent: list[GenResult] | None) -> None:
        try:
            reqs = prog.send(sent) if sent is not None else next(prog)
            while not reqs:  # a program may yield an empty list; answer it at once
                reqs = prog.send([])
        except StopIteration as stop:
            self._on_done(key, stop.value)
            return
        self._active[self.pool.submit(reqs)] = (key, prog)


def run_programs_async(programs: Mapping[str, Any] | Iterable[tuple[str, Any]], pool: EnginePool,
                       on_done: Callable[[str, Any], None] | None = None,
                       on_failed: Callable[[str, str], None] | None = None,
                       max_active: int = 256) -> ProgramsOutcome:
    """Drive search programs so every actor stays busy (a ``ProgramDriver`` fed from ``programs``).

    At most ``max_active`` programs wait on results at once; programs are started lazily from ``programs``,
    which may be a generator of ``(key, program)`` pairs. Results are kept in ``outcome.results`` only when
    there is no ``on_done`` (a caller with ``on_done`` owns them, so a long stream holds none); failures go
    to ``on_failed`` and ``outcome.failed``.
    """
    if max_active < 1:
        raise ValueError("max_active must be >= 1")
    items = iter(programs.items() if isinstance(programs, Mapping) else programs)
    outcome = ProgramsOutcome()

    def done(key: str, value: Any) -> None:
        if on_done is None:
            outcome.results[key] = value
        else:
            on_done(key, value)

    def failed(key: str, error: str) -> None:
        outcome.failed[key] = error
        if on_failed is not None:
            on_failed(key, error)

    driver = ProgramDriver(pool, done, failed)
    while True:
        while driver.active < max_active and (nxt := next(items, None)) is not None:
            driver.start(*nxt)
        if not driver.active:
            return outcome
        driver.step()
