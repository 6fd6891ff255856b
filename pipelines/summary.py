"""The end-of-run summary: what was produced, what it cost, where it is, and how to query it.

``RunSummary`` is what ``tracemill run`` returns and stores (``runs.stats_json``); ``print_summary`` shows it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cluster.requests import Usage
from pipelines.validate import Validation
from storage.layout import DEFAULT_ROOT


@dataclass
class Meter:
    """Engine usage of the run (the summary's cost figures), summed from the search workers' pools.

    A pool counts each delivered request once (``Usage``), so results shared by several programs or
    reproduced by a retry are not double counted.
    """

    usage: Usage = field(default_factory=Usage)
    calls: int = 0
    retried: int = 0  # requests resubmitted after their call failed (an engine died, or raised)

    def add(self, pool_stats: dict[str, Any]) -> None:
        """Add one pool's ``EnginePool.stats()``."""
        self.usage.merge(pool_stats["usage"])
        self.calls += pool_stats["calls"]
        self.retried += pool_stats["retried"]

    def stats(self) -> dict[str, Any]:
        """``engine_calls``, ``engine_retried`` and ``engine_<usage field>`` (requests, tokens) of the run."""
        return {"engine_calls": self.calls, "engine_retried": self.retried,
                **{f"engine_{k}": v for k, v in asdict(self.usage).items()}}


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
    startup_s: float = 0.0  # search workers built and engines loaded, before the search phase
    search_wall_s: float = 0.0  # wall time of the search phase (from every engine loaded to the last shard)
    # engine busy time: per actor the UNION of its in-flight call intervals (concurrent calls counted once),
    # summed over actors and over each actor's incarnations (cluster.monitor: a killed engine's time counts
    # up to the monitor's last sample before the kill)
    engine_busy_s: float = 0.0
    engine_busy_per_actor_s: list[float] = field(default_factory=list)
    engine_call_s: float = 0.0  # time inside engine calls summed per call (> busy when calls overlap)
    engine_incarnations: list[int] = field(default_factory=list)  # per actor: 1, or more after Ray restarts
    # tokens the engines generated, delivered or not (> engine_completion_tokens when a kill lost work)
    engine_generated_tokens: int = 0
    # generated tokens per engine per bucket of the search phase: {"bucket_s": s, "tokens": {engine_id: [...]}}
    engine_timeline: dict[str, Any] = field(default_factory=dict)
    validation: Validation | None = None  # the dataset invariants, checked once the run is mined
    meter: Meter = field(default_factory=Meter)

    @property
    def orchestration_overhead(self) -> float:
        """Share of the search phase's engine capacity (wall x replicas) with no call inside any engine."""
        capacity = self.search_wall_s * self.replicas
        return max(0.0, 1 - self.engine_busy_s / capacity) if capacity else 0.0

    @property
    def engine_restarts(self) -> int:
        """Times Ray restarted an engine actor during the search (its earlier incarnations still count)."""
        return sum(self.engine_incarnations) - len(self.engine_incarnations)

    @property
    def search_tokens_per_s(self) -> float:
        """Generated tokens per second of the search phase (the engines' throughput as the run saw it)."""
        return self.meter.usage.completion_tokens / self.search_wall_s if self.search_wall_s else 0.0

    @property
    def accuracy(self) -> float:
        return self.correct_solutions / self.solutions if self.solutions else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.meter.usage.completion_tokens / self.wall_s if self.wall_s else 0.0

    def stats(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("meter", "run_id", "root", "report", "validation")}
        if self.validation is not None:
            out["validation"] = {c.name: c.violations for c in self.validation.checks}
        out.update(self.meter.stats())
        out.update(accuracy=self.accuracy, tokens_per_s=self.tokens_per_s, engine_restarts=self.engine_restarts,
                   search_tokens_per_s=self.search_tokens_per_s,
                   orchestration_overhead=self.orchestration_overhead)
        return out


EXAMPLE_QUERIES = (
    ("answer accuracy per problem",
     "SELECT problem_id, count(*) AS solutions, avg(correct::INT) AS accuracy FROM solutions GROUP BY 1 ORDER BY 3 DESC"),
    ("MC value by step depth",
     "SELECT n.depth, count(*) AS steps, round(avg(l.value), 3) AS mean_value, avg(l.hard::INT) AS good "
     "FROM step_labels l JOIN nodes n USING (run_id, node_id) GROUP BY 1 ORDER BY 1"),
    ("first labeled error per solution",
     "SELECT first_error, count(*) AS solutions FROM solutions GROUP BY 1 ORDER BY 1"),
    ("mined traces and their length against the median correct solution",
     "SELECT kind, count(*) AS traces, round(avg(length_ratio), 3) AS vs_median FROM traces GROUP BY 1"),
)


def print_summary(console: Console, s: RunSummary) -> None:
    t = Table(title=f"run {s.run_id}", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    m = s.meter.usage
    rows = [
        ("problems", f"{s.problems} done" + (f", {s.skipped_shards} shards already committed" if s.skipped_shards else "")
         + (f", {s.failed_problems} failed" if s.failed_problems else "")),
        ("solutions", str(s.solutions)),
        ("answer accuracy", f"{s.accuracy:.1%} ({s.correct_solutions}/{s.solutions})"),
        ("steps labeled", str(s.steps_labeled)),
        ("rollouts", str(s.rollouts)),
        ("generated tokens", f"{m.completion_tokens:,}"),
        ("prompt tokens", f"{m.prompt_tokens:,} ({m.cached_tokens:,} served from a shared prefix)"),
        ("throughput", f"{s.tokens_per_s:,.1f} generated tokens/s over {s.wall_s:.1f} s wall"),
        ("start-up", f"{s.startup_s:.1f} s to build the search workers and load the engines"),
        ("engine time", f"{s.engine_busy_s:.1f} s busy (union of in-flight calls, "
                        f"{len(s.engine_busy_per_actor_s) or s.replicas} engine(s)) over a {s.search_wall_s:.1f} s "
                        f"search phase: orchestration overhead {s.orchestration_overhead:.1%}; "
                        f"{s.search_tokens_per_s:,.1f} tokens/s in the search phase"
                        + (f"; {s.engine_restarts} engine restart(s), their earlier work included" if s.engine_restarts else "")),
        ("rejects", str(s.rejects)),
        ("mined", ", ".join(f"{k} {v}" for k, v in s.mined.items()) or "-"),
        ("data", f"{s.root}/runs/{s.run_id}/"),
        ("catalog", f"{s.root}/catalog.duckdb"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
    if s.report:
        console.print(f"report: {s.report}", highlight=False, soft_wrap=True)
    if s.validation is not None:
        print_validation(console, s.validation)
    console.print("Try:")
    root = "" if Path(s.root) == DEFAULT_ROOT.resolve() else f" --root {s.root}"
    for title, query in EXAMPLE_QUERIES:
        console.print(f"  # {title}", style="dim")
        console.print(f"  tracemill sql{root} --run {s.run_id} \"{query}\"", highlight=False, soft_wrap=True)


def print_validation(console: Console, v: Validation) -> None:
    """The one summary line, then one line per failed check with an example."""
    console.print(v.summary(), style="green" if v.ok else "bold red", highlight=False, soft_wrap=True)
    for c in v.failed:
        console.print(f"  {c.name}: {c.violations} violation(s), e.g. {c.example}", highlight=False, soft_wrap=True)
