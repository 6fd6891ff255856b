"""Best-of-N and weighted best-of-N: sample N solutions, score every step, choose by aggregated score.

A solution's score is its step scores aggregated by ``cfg.aggregation`` (``last``: the PRM's view of the
whole solution; ``min``: its weakest step; ``prod``: the chance that every step is right). Best-of-N answers
with the top-scoring solution; weighted best-of-N sums the scores of solutions sharing an answer and answers
with the largest sum (majority vote weighted by the verifier).
"""

from __future__ import annotations

from cluster.problems.problem import Problem
from search.guided.base import (
    BestOfNConfig,
    GuidedResult,
    Scorer,
    aggregate,
    judged,
    majority_answer,
    pick_best,
    result_for_answer,
    sample_full,
    score_candidates,
)
from search.program import Program
from search.sampling import JudgeFn

NAME = "best_of_n"
WEIGHTED_NAME = "weighted_best_of_n"


def run(problem: Problem, prompt: str, cfg: BestOfNConfig, scorer: Scorer,
        judge: JudgeFn) -> Program[GuidedResult]:
    cands, tokens = yield from sample_full(problem, prompt, cfg)
    yield from score_candidates(scorer, problem, prompt, cands)
    return pick_best(problem, NAME, cands, cfg.aggregation, judge, tokens)


def run_weighted(problem: Problem, prompt: str, cfg: BestOfNConfig, scorer: Scorer,
                 judge: JudgeFn) -> Program[GuidedResult]:
    cands, tokens = yield from sample_full(problem, prompt, cfg)
    yield from score_candidates(scorer, problem, prompt, cands)
    judged(problem, cands, judge)
    weights = [aggregate(c, cfg.aggregation) for c in cands]
    return result_for_answer(problem, WEIGHTED_NAME, majority_answer([c.answer for c in cands], weights), cands, tokens)
