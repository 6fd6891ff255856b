"""Majority vote (self-consistency): sample N solutions and answer with the most common final answer.

It needs no verifier; the scorer argument is accepted (and ignored) so every strategy has one signature.
Ties are broken by ``base.majority_answer`` (the tied answer sampled first), the rule the report uses too.
"""

from __future__ import annotations

from cluster.problems.problem import Problem
from search.guided.base import (
    GuidedResult,
    MajorityConfig,
    Scorer,
    judged,
    majority_answer,
    result_for_answer,
    sample_full,
)
from search.program import Program
from search.sampling import JudgeFn

NAME = "majority"


def run(problem: Problem, prompt: str, cfg: MajorityConfig, scorer: Scorer | None,
        judge: JudgeFn) -> Program[GuidedResult]:
    cands, tokens = yield from sample_full(problem, prompt, cfg)
    judged(problem, cands, judge)
    return result_for_answer(problem, NAME, majority_answer([c.answer for c in cands]), cands, tokens)
