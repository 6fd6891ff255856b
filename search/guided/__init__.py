"""Verifier-guided search, found by name: every strategy is ``run(problem, prompt, cfg, scorer, judge)``.

Each returns a program (``search/program.py``) yielding generation requests, so ``run_programs`` batches
them across problems; scorers (``scorers.py``) say how good a step is. Each strategy has its own frozen
config holding only the keys it reads (``keep_frac`` is a beam key: given to DVTS it is an error). A new
strategy is one module plus one entry in ``STRATEGIES``.

Example::

    from search.program import run_programs
    cfg = make_config("beam", {"n": 8, "aggregation": "min"})
    scorer = make_scorer("mc", {"k": 4}, judge=judge)
    programs = {p.problem_id: STRATEGIES["beam"].run(p, prompt_of(p), cfg, scorer, judge) for p in problems}
    results = run_programs(programs, engine.generate)  # problem_id -> GuidedResult
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from search.guided import beam, best_of_n, dvts, majority
from search.guided.base import (
    AGGREGATIONS,
    BeamConfig,
    BestOfNConfig,
    Candidate,
    DvtsConfig,
    GuidedResult,
    MajorityConfig,
    SampleConfig,
    Scorer,
    majority_answer,
)
from search.guided.scorers import SCORERS, make_scorer


@dataclass(frozen=True)
class Strategy:
    config: type[SampleConfig]  # frozen dataclass with ``from_dict`` (unknown keys rejected)
    run: Callable[..., Any]  # (problem, prompt, cfg, scorer, judge) -> Program[GuidedResult]
    scored: bool = True  # whether it reads the scorer (majority vote does not)


STRATEGIES: dict[str, Strategy] = {
    majority.NAME: Strategy(MajorityConfig, majority.run, scored=False),
    best_of_n.NAME: Strategy(BestOfNConfig, best_of_n.run),
    best_of_n.WEIGHTED_NAME: Strategy(BestOfNConfig, best_of_n.run_weighted),
    beam.NAME: Strategy(BeamConfig, beam.run),
    dvts.NAME: Strategy(DvtsConfig, dvts.run),
}


def make_config(name: str, options: Mapping[str, Any]) -> Any:
    """The named strategy's config from a plain mapping; an unknown strategy or key is a ``ValueError``."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown guided strategy {name!r}; known: {sorted(STRATEGIES)}")
    return STRATEGIES[name].config.from_dict(options)


__all__ = ["AGGREGATIONS", "SCORERS", "STRATEGIES", "BeamConfig", "BestOfNConfig", "Candidate", "DvtsConfig",
           "GuidedResult", "MajorityConfig", "SampleConfig", "Scorer", "Strategy", "majority_answer", "make_config",
           "make_scorer"]
