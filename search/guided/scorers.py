"""Step scorers for guided search: PRM, Monte Carlo value, arithmetic tool checker, and exact arith truth.

Every scorer has one method, ``score(problem, prompt, prefixes) -> Program[list[float]]``: the score of the
LAST step of each prefix, in [0, 1]. It is a program because the MC scorer samples rollouts through the
engine; the others return without yielding. Found by name in ``SCORERS``; options are the dataclass fields.

Example::

    scorer = make_scorer("mc", {"k": 4}, judge=judge)
    scores = run_program(scorer.score(problem, prompt, [["step 1\\n\\n"]]), engine.generate)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cluster.engine import request_key
from cluster.problems import arith
from cluster.problems.problem import Problem
from cluster.problems.steps import DEFAULT_DELIMITER
from search.program import Program
from search.rollouts import RolloutConfig, rollout_batch
from search.sampling import JudgeFn, config_from_dict
from search.tree import Tree
from verifier.arith_claims import first_error_by_claims


def _no_requests(values: list[float]) -> Program[list[float]]:
    """A program that needs no samples: it returns at once (the driver never sees a request)."""
    return values
    yield  # a generator function, so ``yield from`` works on it like on any scorer


@dataclass
class McScorer:
    """Monte Carlo value: the share of ``k`` rollouts from the prefix that reach the gold answer."""

    judge: JudgeFn
    k: int = 4  # rollouts per prefix
    rollout: RolloutConfig = field(default_factory=RolloutConfig)

    def score(self, problem: Problem, prompt: str, prefixes: list[list[str]]) -> Program[list[float]]:
        # the tree is rooted at problem AND prompt: equal prefixes under two prompt styles are different
        # states, so their rollouts must not share request keys
        tree = Tree(request_key(problem.problem_id, prompt))
        leaves = [tree.add_path(p)[-1] if p else tree.root for p in prefixes]
        unique = list({n.node_id: n for n in leaves}.values())  # equal prefixes share their rollouts
        yield from rollout_batch([(n, self.k) for n in unique], problem, prompt, self.rollout, self.judge)
        return [n.value or 0.0 for n in leaves]


@dataclass
class ToolScorer:
    """Arithmetic claim checker: 1 while every claim so far holds, 0 from the first wrong claim on."""

    def score(self, problem: Problem, prompt: str, prefixes: list[list[str]]) -> Program[list[float]]:
        return (yield from _no_requests([float(first_error_by_claims(p) < 0) for p in prefixes]))


@dataclass
class ArithTruthScorer:
    """Exact truth on arith problems (``cluster.problems.arith.first_error``): an oracle for tests and benchmarks."""

    delimiter: str = DEFAULT_DELIMITER

    def score(self, problem: Problem, prompt: str, prefixes: list[list[str]]) -> Program[list[float]]:
        values = [float(arith.first_error(problem.question, "".join(p), self.delimiter) < 0) for p in prefixes]
        return (yield from _no_requests(values))


@dataclass
class PrmScorer:
    """A trained PRM (``verifier.prm``); each maximal prefix is scored once, shorter ones read from it."""

    model: Any  # verifier.prm.ProcessRewardModel (anything with ``score_batch``)

    def score(self, problem: Problem, prompt: str, prefixes: list[list[str]]) -> Program[list[float]]:
        by_len = sorted({tuple(p) for p in prefixes}, key=len, reverse=True)
        maximal: list[tuple[str, ...]] = []
        for p in by_len:
            if not any(m[:len(p)] == p for m in maximal):
                maximal.append(p)
        scored = self.model.score_batch([(problem.question, list(m)) for m in maximal])
        table: dict[tuple[str, ...], float] = {}
        for m, s in zip(maximal, scored, strict=True):
            for i in range(len(m)):
                table.setdefault(m[:i + 1], s[i])
        return (yield from _no_requests([table[tuple(p)] for p in prefixes]))


ScorerFactory = Callable[..., Any]

SCORERS: dict[str, ScorerFactory] = {
    "mc": McScorer,
    "tool": ToolScorer,
    "arith_truth": ArithTruthScorer,
    "prm": PrmScorer,
}


def make_scorer(name: str, options: Mapping[str, Any] | None = None, **objects: Any) -> Any:
    """The named scorer; ``options`` are its plain settings (unknown keys rejected), ``objects`` its live
    inputs (``judge`` for mc, ``model`` for prm)."""
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; known: {sorted(SCORERS)}")
    options = dict(options or {})
    if "rollout" in options and isinstance(options["rollout"], Mapping):
        options["rollout"] = config_from_dict(RolloutConfig, options["rollout"])
    return SCORERS[name](**objects, **options)
