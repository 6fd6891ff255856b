"""How many rollouts a probed node gets, and when its own rollouts have decided its label.

A node's MC value p is unknown; its rollouts are Bernoulli(p) draws with posterior Beta(1 + s, 1 + f)
(uniform prior). The stopping rules of ``Prober``:

- ``count``: always reach ``cap`` (Math-Shepherd's fixed k);
- ``success``: stop at the first correct rollout (the hard rule's label can no longer change);
- ``width``: stop once the central ``level`` credible interval is narrower than ``width`` (soft labels);
- ``test``: a sequential test of p against the node's threshold: stop once the posterior puts at least
  ``level`` of its mass on one side of it, or at ``cap`` (then the value itself is compared).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

from search.tree import Node

_BISECT_STEPS = 40  # quantile bisection: 2^-40 precision is far below any useful interval width
UNTIL = ("count", "success", "width", "test")


def beta_cdf(x: float, a: int, b: int) -> float:
    """CDF of Beta(a, b) for integer a, b: P(Binomial(a + b - 1, x) >= a) (no scipy needed)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
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


def soft_verdict(successes: int, failures: int, threshold: float, level: float, capped: bool) -> bool | None:
    """Is the MC value at least ``threshold``? True/False once decided, None while more rollouts could tell.

    Sequentially: decided once the posterior puts ``level`` of its mass on one side of the threshold;
    ``capped`` (no more rollouts coming): the value itself is compared. A node without a single correct
    rollout is never good, so a soft rule only ever calls more steps bad than the hard rule does.

    >>> [soft_verdict(s, f, 0.2, 0.9, False) for s, f in ((3, 0), (0, 20), (0, 1))]
    [True, False, None]
    >>> soft_verdict(1, 7, 0.2, 0.9, capped=True)
    False
    """
    if capped:
        return successes > 0 and successes / (successes + failures) >= threshold
    below = beta_cdf(threshold, 1 + successes, 1 + failures)  # P(p < threshold | rollouts)
    if below >= level:
        return False
    if 1 - below >= level and successes > 0:
        return True
    return None


@dataclass(frozen=True)
class Prober:
    """How many rollouts a probed node gets per round, and when sampling it more cannot change its label."""

    cap: int  # most rollouts per node (the k of fixed-k strategies)
    batch: int  # rollouts per round; batch == cap samples all k at once
    until: str = "success"  # one of ``UNTIL`` (module docstring)
    width: float = 0.2  # "width": the credible interval width to reach
    level: float = 0.9  # credible level of that interval / of the sequential test

    def __post_init__(self) -> None:
        if self.until not in UNTIL:
            raise ValueError(f"until must be one of {UNTIL}, got {self.until!r}")

    def need(self, node: Node, threshold: float | None = None) -> int:
        """Rollouts to take now at ``node`` (0: done); ``threshold`` is the node's for the "test" rule."""
        if node.terminal or node.n >= self.cap:
            return 0
        s, f = node.n_correct, node.n - node.n_correct
        if self.until == "success" and s > 0:
            return 0
        if self.until == "width" and node.n and beta_interval_width(s, f, self.level) < self.width:
            return 0
        if self.until == "test" and threshold is not None and \
                soft_verdict(s, f, threshold, self.level, capped=False) is not None:
            return 0
        return min(self.batch, self.cap - node.n)
