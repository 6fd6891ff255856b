"""The probing loop shared by linear, binary and adaptive labeling.

Two choices make a strategy: *where* to probe (``SEARCHES``: every step, or the binary-search midpoint of
each solution) and *how much* to sample per probe (``Prober`` in ``sequential``: k at once, or small batches
until the label is decided). Each round, every solution's probes go out together in one ``rollout_batch``
(shared nodes once), and every search restarts from the current evidence, so rollouts taken for one
solution are reused by all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cluster.problems.problem import Problem
from search.labeling.base import Evidence
from search.program import Program
from search.rollouts import RolloutConfig, RolloutCost, rollout_batch
from search.sampling import JudgeFn
from search.tree import Node


def _inner(path: list[Node]) -> list[Node]:
    """The steps that need rollouts: a terminal leaf is labeled by its own answer."""
    return path[:-1] if path and path[-1].terminal else path


def linear_targets(path: list[Node], evidence: Evidence) -> list[Node]:
    """Every step up to a checker's flagged one that still wants rollouts, except steps inferred good."""
    targets = []
    for node in _inner(path):
        if node.node_id in evidence.flagged:
            break
        inferred = not node.n and evidence.known(node) is True
        if not inferred and node.node_id not in evidence.exhausted and evidence.need(node):
            targets.append(node)
    return targets


def binary_targets(path: list[Node], evidence: Evidence) -> list[Node]:
    """The next probe of the search for the first bad step (none once it is found or all are good).

    f is the first step not known good. If it is known bad, the search is over. If a later step (before the
    first known-bad one, hi) is known good, f has rollouts that have not decided yet: sample it more (a
    later success does not override a step's own failures). Otherwise probe the midpoint of [f, hi). The
    search restarts from the evidence every round, so it never contradicts what other solutions learned.
    """
    inner = _inner(path)
    known = [evidence.known(node) for node in inner]
    f = next((i for i, k in enumerate(known) if k is not True), len(inner))
    if f == len(inner) or known[f] is False:
        return []
    hi = next((j for j in range(f, len(inner)) if known[j] is False), len(inner))
    if any(known[i] is True for i in range(f, hi)):
        return [inner[f]]
    return [inner[(f + hi) // 2]]


SEARCHES: dict[str, Callable[[list[Node], Evidence], list[Node]]] = {
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


def probe(paths: list[list[Node]], evidence: Evidence, search: str, caps: Caps, problem: Problem, prompt: str,
          rollout: RolloutConfig, judge: JudgeFn) -> Program[RolloutCost]:
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
            extra = [n for n in _inner(path) if n.rollouts] if evidence.prober.until == "width" else []
            for node in targets_of(path, evidence) + extra:
                if node.node_id in pairs or node.node_id in evidence.exhausted:
                    continue
                want = evidence.need(node)
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
