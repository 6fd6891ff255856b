"""MCTS labeling (OmegaPRM, Luo et al. 2024): grow the tree from rollouts, binary-search wrong ones.

1. Question filter: the N sampled solutions are N samples from the root, so they count into the root's MC
   value; root rollouts top them up to k only where N < k (existing ones reused). A question whose root
   samples are all right or all wrong teaches nothing about steps and is dropped (``LabelResult.filtered``).
   A root probe the budget refuses is not a filter: the search goes on with what it has.
2. Candidate pool: wrong-answer continuations (s, r) hanging off a state s with 0 < MC(s) < 1 — the
   sampled wrong solutions (state: the root; with ``trust_answer = False`` the correct ones too) and every
   wrong rollout taken later. Every rollout is split into steps and added to the tree under its node
   (origin "rollout"), so nothing sampled is lost.
3. Select the candidate maximizing Q + U with Q = alpha^(1 - MC(s)) * beta^(len(r) / L) (prefer states
   that "should" succeed and short wrong continuations) and U = c_puct * sqrt(sum N) / (1 + N(s)).
4. Binary-search r for its first error with k rollouts per probe (labels by the shared ``LabelRules``);
   each probe's wrong rollouts join the pool.
Stops at ``search_limit`` selections, when the pool is empty, or before a probe would overrun
``rollout_budget`` (root probe included), so the budget is never exceeded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from math import sqrt
from typing import Any

from cluster.engine import FINISH_LENGTH
from cluster.problems.problem import Problem
from cluster.problems.steps import DEFAULT_DELIMITER, split_steps
from search.labeling.base import Evidence, LabelResult, LabelRules, finish
from search.labeling.probe import binary_targets
from search.labeling.sequential import Prober
from search.program import Program
from search.rollouts import RolloutConfig, RolloutCost, rollout_batch
from search.sampling import JudgeFn, config_from_dict, step_token_counts
from search.tree import Node, Rollout, Tree

NAME = "mcts"


@dataclass(frozen=True)
class MctsConfig(LabelRules):
    k: int = 8  # rollouts per probe (root filter and each binary-search step)
    alpha: float = 0.5  # OmegaPRM's defaults for Q = alpha^(1 - MC) * beta^(len / L)
    beta: float = 0.9
    length_scale: int = 500  # L, in tokens
    c_puct: float = 0.125
    search_limit: int = 50  # selections per question
    rollout_budget: int = 200  # rollouts per question, root probe included
    filter_questions: bool = True
    delimiter: str = DEFAULT_DELIMITER  # to split rollouts into steps
    rollout: RolloutConfig = field(default_factory=RolloutConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k < 1 or self.search_limit < 0 or self.rollout_budget < 0 or self.length_scale < 1:
            raise ValueError("mcts: need k >= 1, length_scale >= 1 and non-negative limits")
        if not (0 < self.alpha <= 1 and 0 < self.beta <= 1 and self.c_puct >= 0):
            raise ValueError("mcts: need alpha, beta in (0, 1] and c_puct >= 0")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MctsConfig:
        return config_from_dict(cls, data)


@dataclass
class _Candidate:
    state: Node  # the known-good-ish node the continuation starts from
    steps: list[Node]  # the continuation, ending in a wrong terminal step

    @property
    def n_tokens(self) -> int:
        return sum(node.n_tokens for node in self.steps)


def _attach(tree: Tree, node: Node, rollout: Rollout, delimiter: str) -> _Candidate | None:
    """Add a rollout's steps under ``node``; returns it as a candidate if it ended with a wrong answer."""
    steps = split_steps(rollout.text, delimiter)
    if not steps:
        return None
    path = tree.add_path(steps, step_token_counts(steps, rollout.n_tokens), origin="rollout", parent=node)
    leaf = path[-1]
    if rollout.finish_reason == FINISH_LENGTH or leaf.children or leaf.rollouts:
        return None  # no final answer, or the leaf is an inner step elsewhere: not a located error
    if not leaf.terminal:
        leaf.terminal, leaf.answer, leaf.outcome_correct = True, rollout.answer, rollout.correct
    return None if leaf.outcome_correct else _Candidate(node, path)


def _score(c: _Candidate, mc: float, visits: dict[str, int], cfg: MctsConfig) -> float:
    """OmegaPRM's selection score Q + U of candidate ``c`` whose state has MC value ``mc``.

    Q = alpha^(1 - mc) * beta^(len(r) / L), len(r) = the continuation's tokens, L = ``length_scale``;
    U = c_puct * sqrt(sum over states of N) / (1 + N(s)), N = how often a state was selected (``visits``).
    """
    q = cfg.alpha ** (1 - mc) * cfg.beta ** (c.n_tokens / cfg.length_scale)
    u = cfg.c_puct * sqrt(sum(visits.values())) / (1 + visits.get(c.state.node_id, 0))
    return q + u


def _select(pool: list[_Candidate], mc: Callable[[Node], float], visits: dict[str, int],
            cfg: MctsConfig) -> _Candidate:
    """The candidate with the highest ``_score`` (the first of equals, in pool order)."""
    return max(pool, key=lambda c: _score(c, mc(c.state), visits, cfg))


def label(tree: Tree, paths: list[list[Node]], problem: Problem, prompt: str, cfg: MctsConfig,
          judge: JudgeFn) -> Program[LabelResult]:
    prober = Prober(cap=cfg.k, batch=cfg.k, until="count")
    evidence = Evidence.of(tree, paths, prober, cfg)
    cost = RolloutCost()
    pool: list[_Candidate] = []
    root = tree.root

    def mc(node: Node) -> float:
        """MC value of a state; the root's counts the sampled solutions."""
        value = evidence.root_value() if node is root else node.value
        return value or 0.0

    def take(node: Node, need: int) -> Program[bool]:
        """Take ``need`` rollouts at ``node`` within budget; its wrong ones join the pool if 0 < MC < 1."""
        if need <= 0 or cost.rollouts + need > cfg.rollout_budget:
            return False
        new = yield from rollout_batch([(node, need)], problem, prompt, cfg.rollout, judge, cost)
        found = [_attach(tree, node, r, cfg.delimiter) for r in new]
        if 0 < mc(node) < 1:
            pool.extend(c for c in found if c is not None)
        evidence.refresh()
        return True

    yield from take(root, cfg.k - root.n - evidence.root_counts[1])  # refused by the budget: go on without
    if cfg.filter_questions and evidence.root_value() in (0.0, 1.0):
        result = finish(NAME, evidence, paths, cost, nodes=[])
        result.filtered, result.first_errors = True, [None] * len(paths)
        return result
    searched = [p for p in paths if p[-1].terminal and (not p[-1].outcome_correct or not cfg.trust_answer)]
    pool[:0] = [_Candidate(root, p) for p in searched]
    visits: dict[str, int] = {}
    iterations, within_budget = 0, True
    while within_budget and iterations < cfg.search_limit:
        open_pool = [c for c in pool if 0 < mc(c.state) < 1]
        if not open_pool:
            break
        chosen = _select(open_pool, mc, visits, cfg)
        pool.remove(chosen)
        visits[chosen.state.node_id] = visits.get(chosen.state.node_id, 0) + 1
        iterations += 1
        while within_budget and (targets := binary_targets(chosen.steps, evidence)):
            within_budget = yield from take(targets[0], evidence.need(targets[0]))
    result = finish(NAME, evidence, paths, cost, nodes=list(tree.nodes.values()))
    result.stats = {"iterations": iterations, "pool_left": len(pool), "nodes": len(tree.nodes)}
    return result
