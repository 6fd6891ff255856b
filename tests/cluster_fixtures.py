"""Shared pieces of the cluster tests: a flaky sim engine, a step-by-step program, a pool-capturing patch.

The Ray cluster fixture is ``ray_cluster`` in ``tests/conftest.py``.

``FLAKY`` is a backend name (``module:callable``) that Ray workers resolve by import, so tests exercise the
same path a real run uses (spec → actor → ``cluster.backends.build_engine``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

from cluster.engine import GenRequest, GenResult, request_key, seed_for
from cluster.problems.arith import generate
from cluster.sim_engine import SimConfig, SimEngine

FLAKY = "tests.cluster_fixtures:flaky_sim"
SLOW_START = "tests.cluster_fixtures:slow_start_sim"  # a sim that takes SLOW_START_S to build, like a model load
SLOW_START_S = 6.0
POISON = "POISON"  # a prompt containing this always makes the flaky engine raise
DELIMITER = "\n\n"
# the real vLLM engines of the tests: a 1 GiB KV cache (~45k SmolLM2 tokens) whatever the NUMA node's size
VLLM_TEST_KV_BYTES = 2**30


class FlakySim(SimEngine):
    """The sim engine, except that any batch holding a poisoned prompt raises."""

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        if any(POISON in req.prompt for req in requests):
            raise ValueError("poisoned prompt")
        return super().generate(requests)


def flaky_sim(config: dict[str, Any]) -> FlakySim:
    return FlakySim(SimConfig(**config))


def slow_start_sim(config: dict[str, Any]) -> SimEngine:
    time.sleep(SLOW_START_S)
    return SimEngine(SimConfig(**config))


def prompts(n: int, seed: int = 0) -> dict[str, str]:
    """``n`` arith prompts keyed by a short problem key."""
    eng = SimEngine()
    return {f"p{i}": eng.apply_chat_template([{"role": "user", "content": spec.question}])
            for i, spec in enumerate(generate(n, seed))}


def step_program(key: str, prompt: str, depth: int = 3, n: int = 2) -> Generator[list[GenRequest], list[GenResult], list[str]]:
    """Greedy step-by-step search: each round samples ``n`` next steps, keeps the first; returns the steps.

    Checks that every result answers the request it was sent for (a lost or duplicated result fails).
    """
    prefix, steps = "", []
    for d in range(depth):
        rk = request_key(key, d)
        req = GenRequest(rk, prompt, prefix, n=n, max_new_tokens=64, stop=(DELIMITER,),
                         seed=seed_for(rk, 0), group=key)
        [res] = yield [req]
        assert res.request_key == rk and len(res.samples) == n
        step = res.samples[0].text
        steps.append(step)
        prefix += step
        if res.samples[0].finish_reason != "stop":
            break
    return steps


def capture_pools(monkeypatch: pytest.MonkeyPatch, on_launch: Callable[[Any], None] | None = None) -> list[Any]:
    """Make ``EnginePool.launch`` record every pool a run launches (and pass each to ``on_launch``), so a test
    can fault its actors mid-run."""
    from cluster.pool import EnginePool

    pools: list[EnginePool] = []
    launch = EnginePool.launch.__func__

    def capture(cls, *args, **kwargs):
        pools.append(launch(cls, *args, **kwargs))
        if on_launch is not None:
            on_launch(pools[-1])
        return pools[-1]

    monkeypatch.setattr(EnginePool, "launch", classmethod(capture))
    return pools


def capture_monitors(monkeypatch: pytest.MonkeyPatch, interval_s: float = 0.05) -> list[Any]:
    """Make every ``EngineMonitor`` a run enters sample every ``interval_s`` and record it, so a test can wait
    until the monitor has seen an engine's work before it strikes."""
    from cluster.monitor import EngineMonitor

    monitors: list[EngineMonitor] = []
    enter = EngineMonitor.__enter__

    def capture(self):
        self.interval_s = interval_s
        monitors.append(self)
        return enter(self)

    monkeypatch.setattr(EngineMonitor, "__enter__", capture)
    return monitors


def arm_fault(pool: Any, fault: Callable[[], None], after_completed: int, actor: int) -> list[bool]:
    """Call ``fault()`` once, from the driver, right after the pool sent actor ``actor`` a new call and at least
    ``after_completed`` requests have been answered; returns a list that holds True once it fired.

    So a fault always lands mid-run on a call in flight, whatever the timing of the machine: no test races a
    kill against the run finishing (the sim engine's latency keeps the new call busy while the fault lands).
    """
    fired: list[bool] = []
    flush = pool._flush

    def flush_then_fault() -> None:
        before = set(pool._calls)
        flush()
        sent = any(call.actor == actor for ref, call in pool._calls.items() if ref not in before)
        if sent and not fired and pool.stats()["usage"].requests >= after_completed:
            fired.append(True)
            fault()

    pool._flush = flush_then_fault
    return fired


def programs(prompt_by_key: dict[str, str], **kw: Any) -> Iterator[tuple[str, Any]]:
    return ((k, step_program(k, p, **kw)) for k, p in prompt_by_key.items())
