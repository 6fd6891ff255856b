"""Engine monitor: the driver samples every engine actor's counters while the engines run.

Why: an actor's counters (busy time, tokens) live in its process, so when Ray restarts a killed actor they
start again at zero, and the run's figures read at its end would lose the killed incarnation's work. The
monitor asks each actor for ``stats()`` every ``interval_s`` from a thread of the driver, keeps the last
sample of each incarnation (the actor's process, ``stats()["incarnation"]``), and an actor's totals are the
sum over its incarnations: a killed incarnation counts up to its last sample before the kill, so at most
``interval_s`` of its work is missed. The same samples give each engine's generated tokens over time.

A sample that does not come back within ``interval_s`` (a dead or restarting actor) is skipped, so a dead
actor never holds up the others' samples or the run.

Example::

    with EngineMonitor(pool.actors) as monitor:
        run_the_search()
    monitor.totals()    # per actor: busy s, call s, usage, incarnations
    monitor.timeline()  # {"bucket_s": 1.0, "tokens": {"engine-0": [...], ...}}
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field, fields
from typing import Any

import ray

from cluster.requests import Usage

INTERVAL_S = 1.0  # between samples: a killed incarnation loses at most this much of its counted work
MAX_POINTS = 240  # buckets of a stored timeline: 1 s buckets up to 4 minutes, wider beyond


@dataclass
class EngineTotals:
    """One engine actor's counters summed over its incarnations (Ray restarts)."""

    engine_id: str
    engine_s: float = 0.0  # union busy time, per incarnation, summed
    call_s: float = 0.0
    usage: Usage = field(default_factory=Usage)  # every result its engines produced, delivered or not
    incarnations: int = 0


class EngineMonitor:
    """Samples ``actors`` every ``interval_s`` between ``__enter__`` and ``__exit__`` (one last sample then)."""

    def __init__(self, actors: list[Any], interval_s: float = INTERVAL_S) -> None:
        self.actors = actors
        self.interval_s = interval_s
        self._last: list[dict[str, dict[str, Any]]] = [{} for _ in actors]  # per actor: incarnation -> sample
        self._series: list[list[tuple[float, int]]] = [[] for _ in actors]  # (seconds, completion tokens so far)
        self._names = [f"engine-{i}" for i in range(len(actors))]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = 0.0

    def __enter__(self) -> EngineMonitor:
        self._start = time.perf_counter()
        self._thread = threading.Thread(target=self._loop, name="engine-monitor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def sample(self) -> None:
        """Ask every actor for its counters once; actors that do not answer within ``interval_s`` are skipped."""
        refs = {actor.stats.remote(): i for i, actor in enumerate(self.actors)}
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=self.interval_s)
        now = time.perf_counter() - self._start
        for ref in ready:
            try:
                stats = ray.get(ref)
            except Exception:  # the actor died while answering: its last good sample stands
                continue
            i = refs[ref]
            with self._lock:
                self._names[i] = stats["engine_id"]
                self._last[i][stats["incarnation"]] = stats
                tokens = sum(s["completion_tokens"] for s in self._last[i].values())
                self._series[i].append((now, tokens))

    def totals(self) -> list[EngineTotals]:
        """Per actor, its incarnations' last samples summed."""
        out = []
        with self._lock:
            for name, samples in zip(self._names, self._last, strict=True):
                t = EngineTotals(name, incarnations=len(samples))
                for s in samples.values():
                    t.engine_s += s["engine_s"]
                    t.call_s += s["call_s"]
                    t.usage.merge(Usage(**{f.name: s[f.name] for f in fields(Usage)}))  # stats() spreads its Usage
                out.append(t)
        return out

    def timeline(self, max_points: int = MAX_POINTS) -> dict[str, Any]:
        """Generated tokens per engine in equal buckets since the monitor started (``bucket_s`` wide, at least
        ``interval_s``, at most ``max_points`` buckets; the last one ends at ``end_s``): each list sums to that
        engine's counted tokens. The tokens between two samples go to the bucket of their midpoint."""
        with self._lock:
            series = [list(s) for s in self._series]
            names = list(self._names)
        end = max((s[-1][0] for s in series if s), default=0.0)
        bucket = max(self.interval_s, math.ceil(end / max_points)) if end else self.interval_s
        buckets = max(1, math.ceil(end / bucket))
        tokens: dict[str, list[int]] = {}
        for name, points in zip(names, series, strict=True):
            row = [0] * buckets
            t_before, before = 0.0, 0
            for t, cumulative in points:
                row[min(int((t_before + t) / 2 // bucket), buckets - 1)] += cumulative - before
                t_before, before = t, cumulative
            tokens[name] = row
        return {"bucket_s": bucket, "end_s": round(end, 3), "tokens": tokens}
