"""Search logic as resumable programs, so one driver can batch requests across many problems.

A *program* handles one problem. It is a generator that yields a list of ``GenRequest`` whenever it needs
samples and receives the matching ``GenResult`` list (same order) back through ``send``; its return value
is the problem's output. Strategies never call an engine: whoever drives the programs decides how requests
are batched, routed to engines (in-process or Ray actors) and retried.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

from cluster.engine import GenRequest, GenResult

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
