"""The probing loop shared by linear, binary and adaptive labeling.

Two choices make a strategy: *where* to probe (``SEARCHES``: every step, or the binary-search midpoint of
each solution) and *how much* to sample per probe (``Prober``: k at once, or small batches until the label is
decided). Each round, every solution's probes go out together in one ``rollout_batch`` (shared nodes once),
and every search restarts from the current evidence, so rollouts taken for one solution are reused by all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from math import comb

from search.labeling.base import Evidence
from search.problems import Problem
from search.program import Program
from search.rollouts import RolloutConfig, RolloutCost, rollout_batch
from search.sampling import JudgeFn
from search.tree import Node

_BISECT_STEPS = 40  # quantile bisection: 2^-40 precision is far below any useful interval width


def beta_cdf(x: float, a: int, b: int) -> float:
    """CDF of Beta(a, b) for integer a, b: P(Binomial(a + b - 1, x) >= a) (no scipy needed)."""
    n = a + b - 1
    return sum(comb(n, j) * x**j * (1 - x) ** (n - j) for j in range(a, n + 1))


def beta_interval_width(successes: int, failures: int, level: float) -> float:
    """Width of the central ``level`` interval of the Beta(1 + s, 1 + f) posterior of an MC value."""
    a, b = 1 + successes, 1 + failures

    def quantile(q: float) -> float:
        lo, hi = 0.0, 1.0
        for _ in range(_BISECT_STEPS):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if beta_cdf(mid, a, b) < q else (lo, mid)
        return (lo + hi) / 2

    tail = (1 - level) / 2
    return quantile(1 - tail) - quantile(tail)


@dataclass(frozen=True)
class Prober:
    """How many rollouts a probed node gets per round, and when its label counts as decided."""

    cap: int  # most rollouts per node (the k of fixed-k strategies)
    batch: int  # rollouts per round; batch == cap samples all k at once
    until: str = "success"  # "count": always reach cap; "success": stop at the first correct rollout;
    #                         "width": stop when the posterior interval is narrower than ``width``
    width: float = 0.2
    level: float = 0.9  # credible level of that interval

    def decided(self, node: Node) -> bool:
        return self.need(node) == 0

    def need(self, node: Node) -> int:
        if node.terminal or node.n >= self.cap:
            return 0
        if self.until == "success" and node.n_correct > 0:
            return 0
        if self.until == "width" and node.n and \
                beta_interval_width(node.n_correct, node.n - node.n_correct, self.level) < self.width:
            return 0
        return min(self.batch, self.cap - node.n)


def _inner(path: list[Node]) -> list[Node]:
    """The steps that need rollouts: a terminal leaf is labeled by its own answer."""
    return path[:-1] if path and path[-1].terminal else path


def linear_targets(path: list[Node], evidence: Evidence, prober: Prober) -> list[Node]:
    return [node for node in _inner(path) if prober.need(node) and node.node_id not in evidence.exhausted]


def binary_targets(path: list[Node], evidence: Evidence, prober: Prober) -> list[Node]:
    """The midpoint of the still-open interval [lo, hi) of the first bad step (none once it is closed).

    lo is one past the last known-good step, hi the first known-bad step after it (or the end). The search
    is restarted from the evidence every round, so it never contradicts what other solutions learned.
    """
    inner = _inner(path)
    lo = 1 + max((i for i, node in enumerate(inner) if evidence.known(node) is True), default=-1)
    hi = next((j for j in range(lo, len(inner)) if evidence.known(inner[j]) is False), len(inner))
    return [inner[(lo + hi) // 2]] if lo < hi else []


SEARCHES: dict[str, Callable[[list[Node], Evidence, Prober], list[Node]]] = {
    "linear": linear_targets,
    "binary": binary_targets,
}


@dataclass(frozen=True)
class Caps:
    """Rollout budgets; None = unlimited. A probe that would exceed one is judged on what it has."""

    per_solution: int | None = None
    per_problem: int | None = None


@dataclass
class _Spend:
    by_solution: list[int]
    total: int = 0
    cost: RolloutCost = field(default_factory=RolloutCost)


def probe(paths: list[list[Node]], evidence: Evidence, prober: Prober, search: str, caps: Caps,
          problem: Problem, prompt: str, rollout: RolloutConfig, judge: JudgeFn) -> Program[RolloutCost]:
    """Probe until no solution's search wants more rollouts; returns what was spent.

    With a width-based prober, nodes that already hold rollouts keep sampling until their soft label is
    decided, even after the hard search has moved past them.
    """
    targets_of = SEARCHES[search]
    spend = _Spend([0] * len(paths))
    while True:
        evidence.refresh()
        pairs: dict[str, tuple[Node, int]] = {}
        for i, path in enumerate(paths):
            extra = [n for n in _inner(path) if n.rollouts] if prober.until == "width" else []
            for node in targets_of(path, evidence, prober) + extra:
                if node.node_id in pairs or node.node_id in evidence.exhausted:
                    continue
                want = prober.need(node)
                left = [c - s for c, s in ((caps.per_solution, spend.by_solution[i]),
                                           (caps.per_problem, spend.total)) if c is not None]
                allowed = min([want, *left])
                if want and allowed <= 0:
                    evidence.exhausted.add(node.node_id)
                elif want:
                    pairs[node.node_id] = (node, allowed)
                    spend.by_solution[i] += allowed
                    spend.total += allowed
        if not pairs:
            return spend.cost
        yield from rollout_batch(list(pairs.values()), problem, prompt, rollout, judge, spend.cost)
