"""Majority vote (self-consistency): sample N solutions and answer with the most common final answer.

It needs no verifier; the scorer argument is accepted (and ignored) so every strategy has one signature.
"""

from __future__ import annotations

from search.guided.base import (
    GuidedConfig,
    GuidedResult,
    Scorer,
    judged,
    most_common_answer,
    result_for_answer,
    sample_full,
)
from search.problems import Problem
from search.program import Program
from search.sampling import JudgeFn

NAME = "majority"


def run(problem: Problem, prompt: str, cfg: GuidedConfig, scorer: Scorer | None,
        judge: JudgeFn) -> Program[GuidedResult]:
    cands, tokens = yield from sample_full(problem, prompt, cfg)
    judged(problem, cands, judge)
    return result_for_answer(problem, NAME, most_common_answer(cands), cands, tokens)
