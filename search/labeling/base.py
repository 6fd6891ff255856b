"""What every labeling strategy returns, the options they share, and how labels follow from the evidence.

A label never contradicts its own evidence. Each ``step_labels`` row says in ``label_source`` what decided
it (columns: node_id, strategy, n, n_correct, value, hard, soft, label_source):

- ``mc``: the node's own rollouts under Math-Shepherd's hard rule: hard == (n_correct > 0).
- ``mc-threshold`` / ``mc-drop``: the node's own rollouts under a soft rule (``rule``): good iff the MC
  value is at least a threshold — a fixed ``threshold``, or (drop) ``(1 - drop)`` times the previous value
  on the path (the nearest ancestor with rollouts; for the first steps, the root's value counting the
  sampled solutions as root samples), with ``threshold`` as its floor (0 for a pure relative drop).
  Stricter than the hard rule: hard may be False with n_correct > 0, but a step without a single correct
  rollout is never good.
- ``outcome``: a terminal node labeled by its own answer (value 1.0 or 0.0, n == 0).
- ``inferred``: a step without rollouts (n == 0), good because a later step on its path is good by its own
  rollouts, or (``trust_answer``) the path ends in a correct answer: either is a correct continuation of it.
- ``override``: a step whose own rollouts all failed (bad, or not decided yet), made good by such a later
  success; only with ``override_failed = True``. No other row has hard == True with n >= 1, n_correct == 0.
  (A soft rule's bad step that has successes, made good that way, is labeled by the hard rule: ``mc``.)
- ``arith``: a checker (``checker = "arith"``) found a wrong arithmetic claim in the step; bad whatever
  its rollouts say. The rows of ``verifier.consensus`` use ``consensus:...``.
- ``tool``: the step's own code call failed, or the result it states disagrees with the output
  (``search.tools.tool_error``); bad whatever its rollouts say, and no rollouts are spent on it.

Open prompts (a problem without a gold answer) are judged against a pseudo-gold: by default self-consistency,
the majority answer of the sampled solutions (``with_pseudo_gold``), or the majority answer of the solutions
an LLM judge finds no error in (``search.labeling.judged_gold``). Every label of such a problem carries the
pseudo-gold's source after its own (``mc:self-consistency``, ``mc:llm-judge``; the problem's
``meta["gold_source"]``), so ``WHERE label_source LIKE '%:llm-judge'`` finds them and
``split_part(label_source, ':', 1)`` is the rule that decided them.

``soft`` is the MC value (the outcome value for terminals); None only for a non-terminal step without
rollouts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from cluster.problems.problem import Problem
from search.guided.base import majority_answer
from search.labeling.checkers import CHECKERS, flag_steps
from search.labeling.sequential import Prober, soft_verdict
from search.rollouts import RolloutCost
from search.sampling import JudgeFn, SampledSolutions
from search.tree import Node, Tree

SOURCES = {"hard": "mc", "threshold": "mc-threshold", "drop": "mc-drop"}  # rule -> label_source
PSEUDO_GOLD = "self-consistency"  # label_source suffix: judged against the sampled solutions' majority answer
LLM_JUDGE = "llm-judge"  # label_source suffix: judged against the majority answer of the judge-accepted solutions
GOLD_SOURCES = (PSEUDO_GOLD, LLM_JUDGE)  # every label_source suffix naming a pseudo-gold


@dataclass(frozen=True)
class LabelRules:
    """Options shared by every strategy's config (each config extends this): what decides a label."""

    rule: str = "hard"  # "hard" (any success = good) | "threshold" | "drop" (see module docstring)
    threshold: float = 0.15  # "threshold": value below it = bad; "drop": the floor of its threshold
    drop: float = 0.5  # "drop": value < (1 - drop) * previous value = bad
    level: float = 0.9  # sequential soft test (adaptive): stop once the posterior is this sure
    trust_answer: bool = True  # a correct final answer makes every step before it good (inferred)
    override_failed: bool = False  # a later success overrides a step's own failed rollouts ("override")
    checker: str = "none"  # "arith": the first step with a wrong arithmetic claim is bad ("arith")

    def __post_init__(self) -> None:
        if self.rule not in SOURCES:
            raise ValueError(f"rule must be one of {sorted(SOURCES)}, got {self.rule!r}")
        if self.checker != "none" and self.checker not in CHECKERS:
            raise ValueError(f"checker must be 'none' or one of {sorted(CHECKERS)}, got {self.checker!r}")
        if not 0 <= self.threshold <= 1 or not 0 <= self.drop < 1 or not 0.5 < self.level < 1:
            raise ValueError("need 0 <= threshold <= 1, 0 <= drop < 1 and 0.5 < level < 1")


@dataclass(frozen=True)
class NodeLabel:
    """One row of ``step_labels`` (without run/problem ids)."""

    node_id: str
    strategy: str
    n: int  # rollouts on the node when labeled
    n_correct: int
    value: float | None  # MC value n_correct / n; terminal nodes: 1.0 / 0.0 by their own answer
    hard: bool  # the step is good
    soft: float | None  # Math-Shepherd SE: the value itself; None for a step without rollouts
    label_source: str  # see the module docstring


@dataclass
class LabelResult:
    strategy: str
    labels: dict[str, NodeLabel]  # node_id -> label; unlabeled nodes are absent
    first_errors: list[int | None]  # per solution: first bad step (0-based), -1 none, None undetermined
    filtered: bool = False  # mcts question filter dropped the problem (never a budget refusal)
    n_rollouts: int = 0  # rollouts this call sampled (existing ones reused are not counted)
    rollout_tokens: int = 0
    stats: dict[str, float] = field(default_factory=dict)  # strategy-specific counters (mcts iterations)


def answer_counts(paths: list[list[Node]]) -> tuple[int, int]:
    """(correct, total) final answers of the solutions: each is one sample from the root."""
    ends = [p[-1] for p in paths if p and p[-1].terminal]
    return sum(bool(n.outcome_correct) for n in ends), len(ends)


@dataclass
class Evidence:
    """What is known about the nodes of one problem's tree, shared by the searches of all its solutions."""

    tree: Tree
    prober: Prober
    rules: LabelRules
    flagged: dict[str, str] = field(default_factory=dict)  # steps found wrong without rollouts -> label source
    root_counts: tuple[int, int] = (0, 0)  # (correct, total) sampled solutions, counted into the root's value
    exhausted: set[str] = field(default_factory=set)  # budget ran out: judge on what was sampled
    _good: set[str] = field(default_factory=set)  # ancestors of a good step or of a trusted correct answer

    @classmethod
    def of(cls, tree: Tree, paths: list[list[Node]], prober: Prober, rules: LabelRules) -> Evidence:
        """The evidence of a fresh labeling call: checker and tool flags, the solutions' answers as root samples."""
        return cls(tree, prober, rules, flag_steps(paths, rules.checker), answer_counts(paths))

    def root_value(self) -> float | None:
        root, (ok, total) = self.tree.root, self.root_counts
        return (root.n_correct + ok) / (root.n + total) if root.n + total else None

    def threshold(self, node: Node) -> float | None:
        """The value below which ``node`` is bad under a soft rule; None under the hard rule."""
        rules = self.rules
        if rules.rule == "hard":
            return None
        if rules.rule == "threshold":
            return rules.threshold
        previous = self._previous_value(node)
        return rules.threshold if previous is None else max(rules.threshold, (1 - rules.drop) * previous)

    def _previous_value(self, node: Node) -> float | None:
        parent_id = node.parent_id
        while parent_id:
            parent = self.tree.nodes[parent_id]
            if parent is self.tree.root:
                return self.root_value()
            if parent.n:
                return parent.value
            parent_id = parent.parent_id
        return None

    def need(self, node: Node) -> int:
        """Rollouts to take now at ``node`` for its own label to be decided (0: decided or terminal)."""
        return self.prober.need(node, self.threshold(node))

    def own(self, node: Node) -> bool | None:
        """The label the node's own rollouts give under the rule; None while undecided or without rollouts."""
        if not node.n:
            return None
        if self.rules.rule == "hard":
            done = node.node_id in self.exhausted or self.need(node) == 0
            return True if node.n_correct else (False if done else None)
        capped = node.node_id in self.exhausted or node.n >= self.prober.cap  # no more rollouts coming
        threshold = self.threshold(node)
        assert threshold is not None  # soft rules always have one
        if self.prober.until != "test" and not capped:
            return None  # fixed k: decided only once all k are in
        return soft_verdict(node.n_correct, node.n - node.n_correct, threshold, self.prober.level, capped)

    def refresh(self) -> None:
        """Recompute which nodes a later success vouches for; call after new rollouts arrive."""
        good: set[str] = set()
        for node in self.tree.nodes.values():
            trusted = node.terminal and bool(node.outcome_correct) and self.rules.trust_answer
            if node.node_id in self.flagged or not (trusted or self.own(node) is True):
                continue
            parent_id = node.parent_id
            while parent_id and parent_id not in good:
                good.add(parent_id)
                parent_id = self.tree.nodes[parent_id].parent_id
        self._good = good

    def known(self, node: Node) -> bool | None:
        """True (good), False (bad) or None (not decided yet)."""
        if node.node_id in self.flagged:
            return False
        if node.terminal:
            return bool(node.outcome_correct)
        own = self.own(node)
        if own is not True and node.node_id in self._good and (not node.n or self.rules.override_failed):
            return True
        return own

    def label(self, node: Node, strategy: str) -> NodeLabel | None:
        hard = self.known(node)
        if hard is None:
            return None
        value = node.value
        if node.node_id in self.flagged:
            source = self.flagged[node.node_id]
        elif node.terminal:
            source, value = "outcome", 1.0 if node.outcome_correct else 0.0
        elif not node.n:
            source = "inferred"
        else:
            source = SOURCES[self.rules.rule] if self.own(node) == hard else "override"
            if source == "override" and node.n_correct:  # a soft rule's bad step with successes, made good
                source = "mc"  # by a later success: that is Math-Shepherd's own verdict on its rollouts
        return NodeLabel(node.node_id, strategy, node.n, node.n_correct, value, hard, value, source)


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


def with_pseudo_gold(problem: Problem, sampled: SampledSolutions, judge: JudgeFn) -> Problem | None:
    """An open prompt with the majority answer of its sampled solutions as gold; None if it has a gold answer
    (or no sample states an answer, so there is nothing to agree on).

    The solutions and their terminal leaves are judged again against that pseudo-gold, so rollouts, outcome
    labels and mined traces all read one answer; ``meta["gold_source"]`` records where it came from. Ties
    follow ``majority_answer`` (the answer sampled first).
    """
    if problem.gold_answer:
        return None
    gold = majority_answer([s.answer for s in sampled.solutions])
    return None if gold is None else adopt_gold(problem, sampled, judge, gold, PSEUDO_GOLD)


def adopt_gold(problem: Problem, sampled: SampledSolutions, judge: JudgeFn, gold: str, gold_source: str,
               meta: dict | None = None) -> Problem:
    """``problem`` with ``gold`` as its answer, found by ``gold_source`` (recorded in ``meta["gold_source"]``
    with any other ``meta``); its solutions and their terminal leaves are judged again against it."""
    for sol in sampled.solutions:
        sol.correct = bool(judge(sol.text, gold).correct)
        if sol.path and sol.path[-1].terminal:
            sol.path[-1].outcome_correct = sol.correct
    return Problem(problem.problem_id, problem.question, gold, problem.source,
                   {**problem.meta, **(meta or {}), "gold_source": gold_source})


def mark_gold_source(label_rows: list[dict], gold_source: str) -> None:
    """Append ``:<gold_source>`` to the ``label_source`` of every ``step_labels`` row (see the docstring)."""
    for row in label_rows:
        row["label_source"] = f"{row['label_source']}:{gold_source}"
