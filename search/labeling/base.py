"""What every labeling strategy returns, and how labels follow from the evidence on the tree.

Evidence is of three kinds: a node's own rollouts (label_source ``mc``), a terminal node's own answer
(``outcome``: its value is 1 or 0 by its answer, no rollout needed), and a descendant's success
(``inferred``). The last one is exact for hard labels: a hard label says "some continuation from here
reaches the gold answer", and a correct continuation of a descendant is also one of this node. So a good
step never follows a bad one on any path, whichever strategy produced the evidence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from search.rollouts import RolloutCost
from search.tree import Node, Tree

Decided = Callable[[Node], bool]  # the strategy has sampled enough at this node to call 0 successes "bad"


@dataclass(frozen=True)
class NodeLabel:
    """One row of ``step_labels`` (without run/problem ids)."""

    node_id: str
    strategy: str
    n: int  # rollouts on the node when labeled
    n_correct: int
    value: float | None  # MC value n_correct / n; terminal nodes: 1.0 / 0.0 by their own answer
    hard: bool  # a correct continuation exists (Math-Shepherd HE)
    soft: float | None  # Math-Shepherd SE: the value itself; None for inferred labels without rollouts
    label_source: str  # mc | outcome | inferred


@dataclass
class LabelResult:
    strategy: str
    labels: dict[str, NodeLabel]  # node_id -> label; unlabeled nodes are absent
    first_errors: list[int | None]  # per solution: first bad step (0-based), -1 none, None undetermined
    filtered: bool = False  # mcts question filter dropped the problem
    n_rollouts: int = 0  # rollouts this call sampled (existing ones reused are not counted)
    rollout_tokens: int = 0
    stats: dict[str, float] = field(default_factory=dict)  # strategy-specific counters (mcts iterations)


@dataclass
class Evidence:
    """Hard knowledge about nodes, shared by the searches of all solutions of one problem."""

    tree: Tree
    decided: Decided
    propagate_rollouts: bool = True  # a descendant's correct rollout makes its ancestors good
    propagate_outcomes: bool = True  # a correct terminal makes its ancestors good (off: search correct ones)
    exhausted: set[str] = field(default_factory=set)  # budget ran out: judge on what was sampled
    _good: set[str] = field(default_factory=set)

    def refresh(self) -> None:
        """Recompute the set of nodes known good; call after new rollouts arrive."""
        good: set[str] = set()
        for node in self.tree.nodes.values():
            witness = node.n_correct > 0
            outcome = node.terminal and bool(node.outcome_correct)
            if not (witness or outcome):
                continue
            good.add(node.node_id)
            if (witness and self.propagate_rollouts) or (outcome and self.propagate_outcomes):
                parent_id = node.parent_id
                while parent_id and parent_id not in good:
                    good.add(parent_id)
                    parent_id = self.tree.nodes[parent_id].parent_id
        self._good = good

    def known(self, node: Node) -> bool | None:
        """True (good), False (bad) or None (not decided yet)."""
        if node.node_id in self._good:
            return True
        if node.terminal:
            return bool(node.outcome_correct)
        if node.rollouts and (self.decided(node) or node.node_id in self.exhausted):
            return False
        return None

    def label(self, node: Node, strategy: str) -> NodeLabel | None:
        hard = self.known(node)
        if hard is None:
            return None
        if node.terminal and not node.n_correct:
            value = 1.0 if node.outcome_correct else 0.0
            return NodeLabel(node.node_id, strategy, node.n, node.n_correct, value, hard, value, "outcome")
        source = "mc" if node.n_correct or not hard else "inferred"
        return NodeLabel(node.node_id, strategy, node.n, node.n_correct, node.value, hard, node.value, source)


def collect_labels(evidence: Evidence, nodes: Iterable[Node], strategy: str) -> dict[str, NodeLabel]:
    evidence.refresh()
    labels = {}
    for node in nodes:
        if node.parent_id and node.node_id not in labels:  # the root is the question, not a step
            lab = evidence.label(node, strategy)
            if lab is not None:
                labels[node.node_id] = lab
    return labels


def first_error(path: list[Node], labels: dict[str, NodeLabel]) -> int | None:
    """Index of the first step labeled bad; -1 if all are good; None if an unlabeled step comes first."""
    for i, node in enumerate(path):
        lab = labels.get(node.node_id)
        if lab is None:
            return None
        if not lab.hard:
            return i
    return -1


def finish(strategy: str, evidence: Evidence, paths: list[list[Node]], cost: RolloutCost,
           nodes: Iterable[Node] | None = None, after_error: bool = True) -> LabelResult:
    """Labels for ``nodes`` (default: the solutions' steps) and each solution's first error.

    ``after_error=False`` (the binary searches) leaves steps after a solution's first error unlabeled even
    where a probe touched them: the search decided only the error's position. Their rollouts stay on the tree.
    """
    labels = collect_labels(evidence, nodes if nodes is not None else (n for p in paths for n in p), strategy)
    errors = [first_error(p, labels) for p in paths]
    if not after_error:
        keep = {n.node_id for p, e in zip(paths, errors, strict=True) for n in (p if e is None or e < 0 else p[:e + 1])}
        labels = {nid: lab for nid, lab in labels.items() if nid in keep}
    return LabelResult(strategy, labels, errors, n_rollouts=cost.rollouts, rollout_tokens=cost.tokens)
