"""A job's problems: the config's problem source as one lazy stream of problems and rejects, cut into shards.

Files are read with the verifier's gold check (``verifier.answers.gold_error``); a missing file or unknown
format is a ``ConfigError`` before anything is written. Shard names depend only on the stream, so a resumed
run plans the same shards and skips the committed ones.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

from cluster.problems.loaders import LoadError, attach_gold, iter_arith, iter_problems
from cluster.problems.problem import Problem
from pipelines.config import ConfigError, ProblemsConfig
from verifier.answers import gold_error

REJECT_SHARD_ROWS = 4096  # load rejects (bad rows, duplicates) per committed rejects shard


def problem_stream(p: ProblemsConfig) -> Iterator[Problem | dict]:
    """The run's problems and load rejects, in order, read lazily; a missing file or unknown format raises
    ``ConfigError`` here, before the run writes anything. Repeated problem ids are ``duplicate`` rejects."""
    if p.source == "arith":
        return iter_arith(p.n, p.seed, dict(p.mix))
    try:
        items = iter_problems(p.source, None if p.format == "auto" else p.format, gold_check=gold_error)
        if p.n:
            items = _first_problems(items, p.n)
        return attach_gold(items, p.gold_files, gold_check=gold_error) if p.gold_files else items
    except LoadError as err:
        raise ConfigError(f"config error: problems: {err}") from None


def _first_problems(items: Iterator[Problem | dict], n: int) -> Iterator[Problem | dict]:
    """``items`` up to and including the ``n``-th problem (the rejects met before it pass through)."""
    for item in items:
        yield item
        if isinstance(item, Problem):
            n -= 1
            if n == 0:
                return


def load_inputs(p: ProblemsConfig) -> tuple[list[Problem], list[dict]]:
    """The whole ``problem_stream`` as lists (for scripts that want every problem at once)."""
    problems: list[Problem] = []
    rejects: list[dict] = []
    for item in problem_stream(p):
        (problems if isinstance(item, Problem) else rejects).append(item)
    return problems, rejects


def plan_shards(items: Iterable[Problem | dict], shard_size: int) -> Iterator[tuple[str, list[Problem] | list[dict]]]:
    """Chunk a problem stream into named shards: ``shard-NNNNNN`` of ``shard_size`` problems, and
    ``load-rejects-NNNNNN`` of up to ``REJECT_SHARD_ROWS`` rejects. Names depend only on the stream, so a
    resumed run plans the same shards and skips the committed ones."""
    problems: list[Problem] = []
    rejects: list[dict] = []
    counts = itertools.count(), itertools.count()
    for item in items:
        if isinstance(item, Problem):
            problems.append(item)
            if len(problems) == shard_size:
                yield f"shard-{next(counts[0]):06d}", problems
                problems = []
        else:
            rejects.append(item)
            if len(rejects) == REJECT_SHARD_ROWS:
                yield f"load-rejects-{next(counts[1]):06d}", rejects
                rejects = []
    if problems:
        yield f"shard-{next(counts[0]):06d}", problems
    if rejects:
        yield f"load-rejects-{next(counts[1]):06d}", rejects
