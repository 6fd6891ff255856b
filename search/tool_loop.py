"""Generation with the python tool: stop at a code block's end, run it in the sandbox, append the output, go on.

``generate_with_tools`` is a program (``search/program.py``): it yields the sampling request (with the stop
string ``"```\\n"`` added), then, round by round, one ``ExecRequest`` per sample that stopped on a python
block and one continuation ``GenRequest`` (n = 1) per sample whose prefix now holds the code and its output.
Continuations keep the prompt and group of the first request, so they go to the same engine and hit its
prefix cache. It returns each sample's whole text with the calls it made.

Programs never run code themselves: a driver does. ``ToolPool`` wraps an ``EnginePool`` for
``run_programs_async`` — ``ExecRequest``s run in a small thread pool (each call is a sandbox subprocess),
generation goes to the engines, and neither waits on the other; ``with_tools`` does the same for a blocking
``generate`` (``run_programs``). ``gather`` runs several tool loops (a rollout batch) as one program.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field, replace
from typing import Any

from cluster.engine import GenRequest, GenResult, request_key, seed_for
from search.program import GenerateFn, Program
from search.tools import STOP, ToolConfig, observation, output_text, trailing_code
from search.tree import ToolCall
from verifier.sandbox import run_python

POLL_S = 0.005  # how often ToolPool.wait looks at engines and sandbox calls when both are outstanding


@dataclass(frozen=True)
class ExecRequest:
    """Run ``code`` once in the sandbox; a driver answers it with a ``ToolCall``."""

    request_key: str
    code: str


@dataclass
class ToolSample:
    """One sample after its tool rounds: all generated text with the observations in place."""

    text: str
    token_ids: list[int]
    finish_reason: str
    calls: list[tuple[int, ToolCall]] = field(default_factory=list)  # (end offset of its output in text, call)


def execute(req: ExecRequest, cfg: ToolConfig) -> ToolCall:
    """Run one code block under the configured caps; never raises for what the code does."""
    res = run_python(req.code, timeout_s=cfg.timeout_s, cpu_s=cfg.cpu_s, memory_mb=cfg.memory_mb)
    return ToolCall(req.code, output_text(res.verdict, res.stdout, res.stderr, cfg.max_output_chars), res.verdict)


def generate_with_tools(req: GenRequest, cfg: ToolConfig) -> Program[list[ToolSample]]:
    """Sample ``req`` with the python tool; every python block in the returned texts has been run.

    A sample continues after a stop on the closing fence of a python block (run first) or of another block
    (nothing to run); at ``cfg.max_calls`` calls, or with no tokens left, it ends with finish "length".
    """
    first = replace(req, stop=(*req.stop, STOP))
    (result,) = yield [first]
    samples = [ToolSample(s.text, list(s.token_ids), s.finish_reason) for s in result.samples]
    turn = 0
    while True:
        turn += 1
        waiting = [i for i, s in enumerate(samples) if s.finish_reason in ("stop", "eos") and _wants_turn(s)]
        if not waiting:
            return samples
        runs = [i for i in waiting if trailing_code(samples[i].text) is not None]
        calls = yield [ExecRequest(request_key(req.request_key, "exec", i, turn), trailing_code(samples[i].text) or "")
                       for i in runs]
        for i, call in zip(runs, calls, strict=True):
            s = samples[i]
            s.text += observation(call, s.text)
            s.calls.append((len(s.text), call))
        follow = []
        for i in waiting:
            s = samples[i]
            left = req.max_new_tokens - len(s.token_ids)
            if len(s.calls) >= cfg.max_calls or left < 1:
                s.finish_reason = "length"
                continue
            key = request_key(req.request_key, "tool", i, turn)
            follow.append((i, replace(first, request_key=key, prefix=req.prefix + s.text, n=1, max_new_tokens=left,
                                      seed=seed_for(key, req.seed))))
        results = yield [r for _, r in follow]
        for (i, _), res in zip(follow, results, strict=True):
            s, (more,) = samples[i], res.samples
            s.text += more.text
            s.token_ids += more.token_ids
            s.finish_reason = more.finish_reason


def _wants_turn(s: ToolSample) -> bool:
    """A sample that stopped on a closing fence (or ended right after a python block) goes on."""
    return s.text.endswith(STOP) if s.finish_reason == "stop" else trailing_code(s.text) is not None


@dataclass
class _Ticket:
    """One submitted batch: sandbox futures by position, and the engine pool's ticket for the rest."""

    size: int
    execs: dict[int, Future[ToolCall]]
    gen_positions: list[int]
    gen_ticket: int | None
    gen_outcome: Any = None  # the engine pool's outcome: a result list or GenerationFailed


class ToolPool:
    """``submit``/``wait`` of an ``EnginePool`` that also answers ``ExecRequest``s from a thread pool.

    ``run_programs_async(programs, ToolPool(pool, cfg), ...)``: a program waiting on sandbox calls does not hold
    up the others, and engine calls keep flowing while code runs. A batch may mix both kinds.
    """

    def __init__(self, pool: Any, cfg: ToolConfig) -> None:
        self.pool = pool
        self.cfg = cfg
        self._executor = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="sandbox")
        self._next = 0
        self._tickets: dict[int, _Ticket] = {}
        self._by_gen: dict[int, int] = {}  # the engine pool's ticket -> ours
        self.calls = 0  # sandbox calls submitted

    def submit(self, requests: list[Any]) -> int:
        ticket, self._next = self._next, self._next + 1
        execs = {i: self._executor.submit(execute, r, self.cfg) for i, r in enumerate(requests)
                 if isinstance(r, ExecRequest)}
        self.calls += len(execs)
        positions = [i for i in range(len(requests)) if i not in execs]
        gen = self.pool.submit([requests[i] for i in positions]) if positions else None
        self._tickets[ticket] = _Ticket(len(requests), execs, positions, gen)
        if gen is not None:
            self._by_gen[gen] = ticket
        return ticket

    def wait(self, tickets: Collection[int]) -> list[tuple[int, Any]]:
        """Every complete ticket among ``tickets`` once one is; [] when nothing can complete."""
        wanted = [t for t in tickets if t in self._tickets]
        while True:
            done = [t for t in wanted if self._complete(self._tickets[t])]
            gen = [self._tickets[t].gen_ticket for t in wanted
                   if self._tickets[t].gen_ticket is not None and self._tickets[t].gen_outcome is None]
            running = [f for t in wanted for f in self._tickets[t].execs.values() if not f.done()]
            if not done and gen:
                for inner, outcome in self.pool.wait(gen, timeout=POLL_S if running else None):
                    self._tickets[self._by_gen.pop(inner)].gen_outcome = outcome
                if not running and not any(self._tickets[t].gen_outcome is not None for t in wanted):
                    return []  # the engine pool has nothing in flight that could complete
            elif not done and running:
                wait_futures(running, return_when=FIRST_COMPLETED)
            elif not done:
                return []
            done = [t for t in wanted if self._complete(self._tickets[t])]
            if done:
                return [(t, self._outcome(self._tickets.pop(t))) for t in done]

    @staticmethod
    def _complete(t: _Ticket) -> bool:
        return (t.gen_ticket is None or t.gen_outcome is not None) and all(f.done() for f in t.execs.values())

    @staticmethod
    def _outcome(t: _Ticket) -> Any:
        if t.gen_ticket is not None and not isinstance(t.gen_outcome, list):
            for f in t.execs.values():
                f.cancel()
            return t.gen_outcome  # GenerationFailed: the program is closed
        out: list[Any] = [None] * t.size
        for i, f in t.execs.items():
            out[i] = f.result()
        for i, res in zip(t.gen_positions, t.gen_outcome or [], strict=True):
            out[i] = res
        return out

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def gather(programs: list[Program[Any]]) -> Program[list[Any]]:
    """Drive sub-programs in lockstep as one program: each round, all their requests go out in one batch."""
    results: list[Any] = [None] * len(programs)
    pending: dict[int, list[Any]] = {}

    def advance(i: int, sent: list[Any] | None) -> None:
        try:
            reqs = programs[i].send(sent) if sent is not None else next(programs[i])
            while not reqs:
                reqs = programs[i].send([])
            pending[i] = reqs
        except StopIteration as stop:
            results[i] = stop.value

    for i in range(len(programs)):
        advance(i, None)
    while pending:
        batch = [(i, r) for i, reqs in pending.items() for r in reqs]
        outs = yield [r for _, r in batch]
        by_program: dict[int, list[Any]] = {}
        for (i, _), out in zip(batch, outs, strict=True):
            by_program.setdefault(i, []).append(out)
        pending = {}
        for i, sent in by_program.items():
            advance(i, sent)
    return results


def with_tools(generate: GenerateFn, cfg: ToolConfig) -> Callable[[list[Any]], list[Any]]:
    """A blocking ``generate`` for ``run_programs`` that also answers ``ExecRequest``s (run in parallel)."""
    executor = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="sandbox")

    def run(requests: list[Any]) -> list[Any]:
        execs = {i: executor.submit(execute, r, cfg) for i, r in enumerate(requests) if isinstance(r, ExecRequest)}
        gens = [r for r in requests if not isinstance(r, ExecRequest)]
        results: list[GenResult] = generate(gens) if gens else []
        it = iter(results)
        return [execs[i].result() if i in execs else next(it) for i in range(len(requests))]

    return run
