"""Diverse verifier tree search (DVTS, HF search-and-learn): N/M independent subtrees of width M.

Beam search at large N tends to collapse onto one high-scoring prefix. DVTS splits the budget into N/M
subtrees; each round, each subtree samples M next steps from its single live beam and greedily keeps the
best-scoring one, so the subtrees explore different solutions. The answer is the best finished candidate
over all subtrees by aggregated score.
"""

from __future__ import annotations

from cluster.problems.problem import Problem
from search.guided.base import DvtsConfig, GuidedResult, Scorer, pick_best, step_search
from search.program import Program
from search.sampling import JudgeFn

NAME = "dvts"


def run(problem: Problem, prompt: str, cfg: DvtsConfig, scorer: Scorer,
        judge: JudgeFn) -> Program[GuidedResult]:
    subtrees = max(1, cfg.n // cfg.beam_width)
    cands, explored, tokens = yield from step_search(problem, prompt, cfg, scorer, groups=subtrees, keep=1, tag=NAME)
    return pick_best(problem, NAME, cands, cfg.aggregation, judge, tokens, explored)
