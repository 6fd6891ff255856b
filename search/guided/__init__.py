"""Verifier-guided search, found by name: every strategy is ``run(problem, prompt, cfg, scorer, judge)``.

Each returns a program (``search/program.py``) yielding generation requests, so ``run_programs`` batches
them across problems; scorers (``scorers.py``) say how good a step is. A new strategy is one module plus one
entry in ``STRATEGIES``.

Example::

    from search.program import run_programs
    cfg = GuidedConfig.from_dict({"n": 8, "aggregation": "min"})
    scorer = make_scorer("mc", {"k": 4}, judge=judge)
    programs = {p.problem_id: STRATEGIES["beam"](p, prompt_of(p), cfg, scorer, judge) for p in problems}
    results = run_programs(programs, engine.generate)  # problem_id -> GuidedResult
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from search.guided import beam, best_of_n, dvts, majority
from search.guided.base import AGGREGATIONS, Candidate, GuidedConfig, GuidedResult, Scorer
from search.guided.scorers import SCORERS, make_scorer

Strategy = Callable[..., Any]  # (problem, prompt, cfg, scorer, judge) -> Program[GuidedResult]

STRATEGIES: dict[str, Strategy] = {
    majority.NAME: majority.run,
    best_of_n.NAME: best_of_n.run,
    best_of_n.WEIGHTED_NAME: best_of_n.run_weighted,
    beam.NAME: beam.run,
    dvts.NAME: dvts.run,
}

__all__ = ["AGGREGATIONS", "SCORERS", "STRATEGIES", "Candidate", "GuidedConfig", "GuidedResult", "Scorer",
           "make_scorer"]
