"""The end-of-run summary: what was produced, what it cost, where it is, and how to query it."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from pipelines.run import RunSummary
from pipelines.validate import Validation
from storage.layout import DEFAULT_ROOT

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
    m = s.meter
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
        ("engine time", f"{s.engine_busy_s:.1f} s busy (union of in-flight calls, "
                        f"{len(s.engine_busy_per_actor_s) or s.replicas} engine(s)) over a {s.search_wall_s:.1f} s "
                        f"search phase: orchestration overhead {s.orchestration_overhead:.1%}; "
                        f"{s.search_tokens_per_s:,.1f} tokens/s in the search phase"),
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
