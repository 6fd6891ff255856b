"""Step-level beam search: N candidate steps per round, keep the best N/M (or the top p%), expand each.

Each round every surviving beam is continued by one step (generation stops at the delimiter), the new step
is scored, and the best ``keep`` candidates survive; a candidate that ends its solution leaves the beam.
The answer is the finished candidate with the best aggregated score.
"""

from __future__ import annotations

from cluster.problems.problem import Problem
from search.guided.base import BeamConfig, GuidedResult, Scorer, pick_best, step_search
from search.program import Program
from search.sampling import JudgeFn

NAME = "beam"


def beams_kept(cfg: BeamConfig) -> int:
    """Survivors per round: ``keep_frac`` of the N candidates when set, else N/M; at least one."""
    return max(1, round(cfg.n * cfg.keep_frac) if cfg.keep_frac else cfg.n // cfg.beam_width)


def run(problem: Problem, prompt: str, cfg: BeamConfig, scorer: Scorer,
        judge: JudgeFn) -> Program[GuidedResult]:
    cands, explored, tokens = yield from step_search(problem, prompt, cfg, scorer, groups=1, keep=beams_kept(cfg),
                                                     tag=NAME)
    return pick_best(problem, NAME, cands, cfg.aggregation, judge, tokens, explored)
