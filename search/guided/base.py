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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cluster.engine import GenRequest, request_key, seed_for
from cluster.problems.problem import Problem
from cluster.problems.steps import DEFAULT_DELIMITER, split_steps
from search.program import Program
from search.sampling import JudgeFn, config_from_dict

FINISH_STOP = "stop"  # a sample ended on the stop string (the delimiter): the solution goes on


def _last(scores: list[float]) -> float:
    return scores[-1]


def _prod(scores: list[float]) -> float:
    return math.prod(scores)


AGGREGATIONS: dict[str, Callable[[list[float]], float]] = {"last": _last, "min": min, "prod": _prod}


@dataclass(frozen=True)
class SampleConfig:
    """What every strategy samples with; each strategy's config extends it with only the keys it reads."""

    n: int = 4  # budget: solutions (majority, best-of-N) or candidate steps per round (beam, DVTS)
    temperature: float = 0.8
    top_p: float = 1.0
    delimiter: str = DEFAULT_DELIMITER  # step separator
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError("n must be >= 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("temperature must be >= 0 and 0 < top_p <= 1")
        if not self.delimiter:
            raise ValueError("delimiter must be non-empty")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        """The config from a plain mapping; a key this strategy does not read is an error."""
        return config_from_dict(cls, data)


def _check_aggregation(how: str) -> None:
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {sorted(AGGREGATIONS)}, got {how!r}")


@dataclass(frozen=True)
class MajorityConfig(SampleConfig):
    """Majority vote: N whole solutions, no verifier."""

    max_new_tokens: int = 512  # per solution

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")


@dataclass(frozen=True)
class BestOfNConfig(MajorityConfig):
    """Best-of-N and weighted best-of-N: N whole solutions, each scored step by step."""

    aggregation: str = "last"  # how a solution's step scores become one number: last | min | prod

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_aggregation(self.aggregation)


@dataclass(frozen=True)
class DvtsConfig(SampleConfig):
    """DVTS: N/M subtrees, each keeps its best of M children per round."""

    beam_width: int = 4  # M: N/M subtrees, each sampling M children of its one live beam
    aggregation: str = "last"  # how candidates are ranked by their step scores: last | min | prod
    max_steps: int = 16  # rounds before unfinished beams are stopped
    step_max_new_tokens: int = 128  # per step

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beam_width < 1 or self.max_steps < 1 or self.step_max_new_tokens < 1:
            raise ValueError("beam_width, max_steps and step_max_new_tokens must be >= 1")
        _check_aggregation(self.aggregation)


@dataclass(frozen=True)
class BeamConfig(DvtsConfig):
    """Step beam search: one beam keeping the top N/M (or the top ``keep_frac`` of N) each round."""

    keep_frac: float = 0.0  # keep this share of the N candidates per step instead of N/M (0 = off)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.keep_frac <= 1.0:
            raise ValueError("keep_frac must be in [0, 1]")


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
    n_tokens: int = 0  # tokens the engine generated for these steps

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
    explored: list[Candidate] = field(default_factory=list)  # every scored prefix, pruned ones too (the tree)
    chosen: int | None = None  # index in ``candidates`` of the candidate whose answer was given

    def __post_init__(self) -> None:
        if not self.explored:
            self.explored = list(self.candidates)


def aggregate(candidate: Candidate, how: str) -> float:
    return AGGREGATIONS[how](candidate.scores) if candidate.scores else 0.0


def judged(problem: Problem, cands: list[Candidate], judge: JudgeFn) -> list[Candidate]:
    for cand in cands:
        verdict = judge(cand.text, problem.gold_answer)
        cand.answer, cand.correct = verdict.answer, bool(verdict.correct)
    return cands


def result_for_answer(problem: Problem, strategy: str, answer: str | None, cands: list[Candidate],
                      tokens: int) -> GuidedResult:
    """The result whose answer is ``answer``; correct iff a candidate with that answer was judged correct.

    The chosen candidate is the first one with that answer (the one that decided the tie, if any).
    """
    correct = any(c.correct for c in cands if c.answer == answer and answer is not None)
    chosen = next((i for i, c in enumerate(cands) if answer is not None and c.answer == answer), None)
    return GuidedResult(problem.problem_id, strategy, answer, correct, cands, tokens, chosen=chosen)


def majority_answer(answers: Sequence[str | None], weights: Sequence[float] | None = None) -> str | None:
    """The answer with the largest total weight (a count by default); ``None`` answers do not vote.

    Ties go to the tied answer seen first in ``answers`` (sample order). This is the one majority rule:
    majority vote, weighted best-of-N and the report's accuracy-against-N curves all call it.

    >>> majority_answer(["3", "5", "5", "3", None])
    '3'
    """
    totals: Counter[str] = Counter()
    for i, answer in enumerate(answers):
        if answer is not None:
            totals[answer] += 1.0 if weights is None else weights[i]
    if not totals:
        return None
    best = max(totals.values())
    return next(a for a in totals if totals[a] == best)


def sample_full(problem: Problem, prompt: str, cfg: MajorityConfig) -> Program[tuple[list[Candidate], int]]:
    """N whole solutions in one request, split into steps; returns them and the tokens generated.

    The key names the prompt but not the strategy, so majority vote and (weighted) best-of-N choose among
    the very same samples and differ only in how they choose, while two prompt styles never share samples.
    """
    # everything the samples depend on is in the key: the pool hands one result to every equal key
    key = request_key(problem.problem_id, "solutions", prompt, cfg.n, cfg.max_new_tokens, cfg.temperature,
                      cfg.top_p, cfg.seed)
    (res,) = yield [GenRequest(key, prompt, "", cfg.n, cfg.max_new_tokens, (), cfg.temperature, cfg.top_p,
                               seed_for(key, cfg.seed), problem.problem_id)]
    cands = [Candidate(split_steps(s.text, cfg.delimiter) or [s.text], done=s.finish_reason != "length",
                       n_tokens=len(s.token_ids)) for s in res.samples]
    return cands, res.completion_tokens


def score_candidates(scorer: Scorer, problem: Problem, prompt: str, cands: list[Candidate]) -> Program[None]:
    """Fill each candidate's per-step scores (every prefix of every candidate, in one scorer call)."""
    prefixes = [c.steps[:i + 1] for c in cands for i in range(len(c.steps))]
    scores = yield from scorer.score(problem, prompt, prefixes)
    it = iter(scores)
    for cand in cands:
        cand.scores = [next(it) for _ in cand.steps]


# ---------------------------------------------------------------- the step loop of beam search and DVTS


def _expand(problem: Problem, prompt: str, cfg: DvtsConfig, beams: list[tuple[Candidate, int]],
            depth: int, tag: str) -> Program[tuple[list[Candidate], int]]:
    """Continue each beam by one step, ``count`` samples per beam; children inherit the parent's scores."""
    reqs = []
    for b, (beam, count) in enumerate(beams):
        # everything the samples depend on is in the key: the pool hands one result to every equal key
        key = request_key(problem.problem_id, tag, prompt, depth, b, beam.text, count, cfg.step_max_new_tokens,
                          cfg.delimiter, cfg.temperature, cfg.top_p, cfg.seed)
        reqs.append(GenRequest(key, prompt, beam.text, count, cfg.step_max_new_tokens, (cfg.delimiter,),
                               cfg.temperature, cfg.top_p, seed_for(key, cfg.seed), problem.problem_id))
    results = yield reqs
    children, tokens = [], 0
    for (beam, _), res in zip(beams, results, strict=True):
        tokens += res.completion_tokens
        for s in res.samples:
            ended = s.finish_reason not in (FINISH_STOP, "length")
            used = beam.n_tokens + len(s.token_ids)
            if not s.text.strip():  # nothing more to say: the parent was already the whole solution
                children.append(Candidate(list(beam.steps), list(beam.scores), done=True, n_tokens=used))
                continue
            children.append(Candidate(beam.steps + [s.text], list(beam.scores), done=ended, n_tokens=used))
    return children, tokens


def step_search(problem: Problem, prompt: str, cfg: DvtsConfig, scorer: Scorer, groups: int,
                keep: int, tag: str) -> Program[tuple[list[Candidate], list[Candidate], int]]:
    """Run ``groups`` independent beams of ``keep`` survivors each.

    Returns the finished candidates, every scored child (the explored tree, pruned ones included) and the
    tokens generated.

    Each round every live beam gets ``cfg.n // (groups * live beams)`` samples (at least one), so a round
    costs about N samples; finished candidates leave the beam and the group's width shrinks.
    """
    live = [[Candidate([])] for _ in range(groups)]
    finished: list[Candidate] = []
    explored: list[Candidate] = []
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
        explored += new
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
    return finished, explored, tokens


def _score_new(scorer: Scorer, problem: Problem, prompt: str, cands: list[Candidate]) -> Program[None]:
    scores = yield from scorer.score(problem, prompt, [c.steps for c in cands])
    for cand, s in zip(cands, scores, strict=True):
        cand.scores.append(s)


def pick_best(problem: Problem, strategy: str, cands: list[Candidate], aggregation: str, judge: JudgeFn,
              tokens: int, explored: list[Candidate] | None = None) -> GuidedResult:
    """Judge the finished candidates and return the one with the best aggregated score (first on ties)."""
    judged(problem, cands, judge)
    if not cands:
        return GuidedResult(problem.problem_id, strategy, None, False, [], tokens, list(explored or []))
    best = max(range(len(cands)), key=lambda i: aggregate(cands[i], aggregation))
    return GuidedResult(problem.problem_id, strategy, cands[best].answer, cands[best].correct, cands, tokens,
                        list(explored or []), chosen=best)
