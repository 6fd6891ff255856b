"""What every guided-search strategy shares: config, candidates, result, aggregation and the step loop.

A strategy is a program (see ``search/program.py``) over one problem with the signature
``run(problem, prompt, cfg, scorer, judge) -> Program[GuidedResult]``; it yields generation requests and
scoring requests (a scorer is itself a program, e.g. MC rollouts), so many problems batch together.

Beam search and DVTS are the same loop with different grouping (as in HF search-and-learn): ``step_search``
keeps groups of live beams; each round every live beam is continued by one step (``stop=[delimiter]``),
the new steps are scored, and each group keeps its best ``keep`` candidates. Beam search is one group that
keeps the top N/M (or top p%); DVTS is N/M groups that each keep their single best child.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from cluster.engine import GenRequest, request_key, seed_for
from search.problems import Problem
from search.program import Program
from search.sampling import JudgeFn, config_from_dict
from search.tree import DEFAULT_DELIMITER, split_steps

FINISH_STOP = "stop"  # a sample ended on the stop string (the delimiter): the solution goes on


def _last(scores: list[float]) -> float:
    return scores[-1]


def _prod(scores: list[float]) -> float:
    return math.prod(scores)


AGGREGATIONS: dict[str, Callable[[list[float]], float]] = {"last": _last, "min": min, "prod": _prod}


@dataclass(frozen=True)
class GuidedConfig:
    """One config for every strategy; a strategy reads the fields it needs (documented per field)."""

    n: int = 4  # budget: solutions (majority, best-of-N) or candidate steps per round (beam, DVTS)
    beam_width: int = 4  # M: beam keeps N/M and expands each M times; DVTS runs N/M subtrees of width M
    keep_frac: float = 0.0  # beam: keep this share of the N candidates per step instead of N/M (0 = off)
    aggregation: str = "last"  # how a solution's step scores become one number: last | min | prod
    max_steps: int = 16  # beam/DVTS: rounds before unfinished beams are stopped
    max_new_tokens: int = 512  # per solution (majority, best-of-N)
    step_max_new_tokens: int = 128  # per step (beam, DVTS)
    temperature: float = 0.8
    top_p: float = 1.0
    delimiter: str = DEFAULT_DELIMITER
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1 or self.beam_width < 1 or self.max_steps < 1:
            raise ValueError("n, beam_width and max_steps must be >= 1")
        if not 0.0 <= self.keep_frac <= 1.0:
            raise ValueError("keep_frac must be in [0, 1]")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {sorted(AGGREGATIONS)}")
        if not self.delimiter or self.max_new_tokens < 1 or self.step_max_new_tokens < 1:
            raise ValueError("delimiter must be non-empty and token limits >= 1")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GuidedConfig:
        return config_from_dict(cls, data)


class Scorer(Protocol):
    """Scores the LAST step of each prefix (a list of steps) — a program, since some scorers sample."""

    def score(self, problem: Problem, prompt: str, prefixes: list[list[str]]) -> Program[list[float]]: ...


@dataclass
class Candidate:
    """A (partial or complete) solution: its steps, the score of each step, and how it ended."""

    steps: list[str]
    scores: list[float] = field(default_factory=list)
    done: bool = False  # the engine ended the solution (not cut at a step or round limit)
    answer: str | None = None
    correct: bool = False

    @property
    def text(self) -> str:
        return "".join(self.steps)


@dataclass
class GuidedResult:
    problem_id: str
    strategy: str
    answer: str | None  # the chosen answer
    correct: bool
    candidates: list[Candidate]  # every finished candidate the choice was made from
    completion_tokens: int = 0  # generated tokens (scorer rollouts not included)


def aggregate(candidate: Candidate, how: str) -> float:
    return AGGREGATIONS[how](candidate.scores) if candidate.scores else 0.0


def judged(problem: Problem, cands: list[Candidate], judge: JudgeFn) -> list[Candidate]:
    for cand in cands:
        verdict = judge(cand.text, problem.gold_answer)
        cand.answer, cand.correct = verdict.answer, bool(verdict.correct)
    return cands


def result_for_answer(problem: Problem, strategy: str, answer: str | None, cands: list[Candidate],
                      tokens: int) -> GuidedResult:
    """The result whose answer is ``answer``; correct iff a candidate with that answer was judged correct."""
    correct = any(c.correct for c in cands if c.answer == answer and answer is not None)
    return GuidedResult(problem.problem_id, strategy, answer, correct, cands, tokens)


def most_common_answer(cands: list[Candidate], weights: list[float] | None = None) -> str | None:
    """The answer with the largest total weight (count by default); ties go to the one seen first."""
    totals: Counter[str] = Counter()
    for i, cand in enumerate(cands):
        if cand.answer is not None:
            totals[cand.answer] += 1.0 if weights is None else weights[i]
    if not totals:
        return None
    best = max(totals.values())
    return next(a for a in totals if totals[a] == best)


def sample_full(problem: Problem, prompt: str, cfg: GuidedConfig) -> Program[tuple[list[Candidate], int]]:
    """N whole solutions in one request, split into steps; returns them and the tokens generated.

    The key does not name the strategy, so majority vote and (weighted) best-of-N choose among the very
    same samples and differ only in how they choose.
    """
    key = request_key(problem.problem_id, "solutions", cfg.n, cfg.seed)
    (res,) = yield [GenRequest(key, prompt, "", cfg.n, cfg.max_new_tokens, (), cfg.temperature, cfg.top_p,
                               seed_for(key, cfg.seed), problem.problem_id)]
    cands = [Candidate(split_steps(s.text, cfg.delimiter) or [s.text], done=s.finish_reason != "length")
             for s in res.samples]
    return cands, res.completion_tokens


def score_candidates(scorer: Scorer, problem: Problem, prompt: str, cands: list[Candidate]) -> Program[None]:
    """Fill each candidate's per-step scores (every prefix of every candidate, in one scorer call)."""
    prefixes = [c.steps[:i + 1] for c in cands for i in range(len(c.steps))]
    scores = yield from scorer.score(problem, prompt, prefixes)
    it = iter(scores)
    for cand in cands:
        cand.scores = [next(it) for _ in cand.steps]


# ---------------------------------------------------------------- the step loop of beam search and DVTS


def _expand(problem: Problem, prompt: str, cfg: GuidedConfig, beams: list[tuple[Candidate, int]],
            depth: int, tag: str) -> Program[tuple[list[Candidate], int]]:
    """Continue each beam by one step, ``count`` samples per beam; children inherit the parent's scores."""
    reqs = []
    for b, (beam, count) in enumerate(beams):
        key = request_key(problem.problem_id, tag, depth, b, beam.text, cfg.seed)
        reqs.append(GenRequest(key, prompt, beam.text, count, cfg.step_max_new_tokens, (cfg.delimiter,),
                               cfg.temperature, cfg.top_p, seed_for(key, cfg.seed), problem.problem_id))
    results = yield reqs
    children, tokens = [], 0
    for (beam, _), res in zip(beams, results, strict=True):
        tokens += res.completion_tokens
        for s in res.samples:
            ended = s.finish_reason not in (FINISH_STOP, "length")
            if not s.text.strip():  # nothing more to say: the parent was already the whole solution
                children.append(Candidate(list(beam.steps), list(beam.scores), done=True))
                continue
            children.append(Candidate(beam.steps + [s.text], list(beam.scores), done=ended))
    return children, tokens


def step_search(problem: Problem, prompt: str, cfg: GuidedConfig, scorer: Scorer, groups: int,
                keep: int, tag: str) -> Program[tuple[list[Candidate], int]]:
    """Run ``groups`` independent beams of ``keep`` survivors each; returns finished candidates and tokens.

    Each round every live beam gets ``cfg.n // (groups * live beams)`` samples (at least one), so a round
    costs about N samples; finished candidates leave the beam and the group's width shrinks.
    """
    live = [[Candidate([])] for _ in range(groups)]
    finished: list[Candidate] = []
    tokens = 0
    per_group = max(1, cfg.n // groups)
    for depth in range(cfg.max_steps):
        work = [(g, beam) for g, beams in enumerate(live) for beam in beams]
        if not work:
            break
        counts = [max(1, per_group // len(live[g])) for g, _ in work]
        beams = [(beam, count) for (_, beam), count in zip(work, counts, strict=True)]
        children, used = yield from _expand(problem, prompt, cfg, beams, depth, tag)
        tokens += used
        new = [c for c in children if len(c.scores) < len(c.steps)]  # an empty child adds no step to score
        yield from _score_new(scorer, problem, prompt, new)
        owner = [g for (g, _), c in zip(work, counts, strict=True) for _ in range(c)]
        pools: list[list[Candidate]] = [[] for _ in range(groups)]
        for g, child in zip(owner, children, strict=True):
            pools[g].append(child)
        live = []
        for pool in pools:
            pool.sort(key=lambda c: aggregate(c, cfg.aggregation), reverse=True)
            best = pool[:keep]
            finished += [c for c in best if c.done]
            live.append([c for c in best if not c.done])
    finished += [c for beams in live for c in beams]  # cut at max_steps: judged on what they wrote
    return finished, tokens


def _score_new(scorer: Scorer, problem: Problem, prompt: str, cands: list[Candidate]) -> Program[None]:
    scores = yield from scorer.score(problem, prompt, [c.steps for c in cands])
    for cand, s in zip(cands, scores, strict=True):
        cand.scores.append(s)


def pick_best(problem: Problem, strategy: str, cands: list[Candidate], cfg: GuidedConfig, judge: JudgeFn,
              tokens: int) -> GuidedResult:
    """Judge the finished candidates and return the one with the best aggregated score."""
    judged(problem, cands, judge)
    if not cands:
        return GuidedResult(problem.problem_id, strategy, None, False, [], tokens)
    best = max(cands, key=lambda c: aggregate(c, cfg.aggregation))
    return GuidedResult(problem.problem_id, strategy, best.answer, best.correct, cands, tokens)
