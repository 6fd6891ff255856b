"""Linear labeling (Math-Shepherd): k rollouts at every step of every solution.

Solutions sharing a prefix share its nodes, so each node is rolled out once (topped up to k, reusing what
is already there). A terminal step needs no rollout: its value is 1 or 0 by its own answer. The defaults
are exactly Math-Shepherd's: hard = value > 0, soft = value, a correct answer vouches for nothing. Options
shared by every strategy (``LabelRules`` in ``base``): ``rule = "threshold" | "drop"`` decides on the value
instead (a wrong step with one lucky success among k is still bad), ``trust_answer`` skips the steps of
correct-answer solutions (good, inferred), ``checker = "arith"`` takes no rollouts from a solution's first
wrong arithmetic claim on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cluster.problems.problem import Problem
from search.labeling.base import Evidence, LabelResult, LabelRules, finish
from search.labeling.probe import Caps, probe
from search.labeling.sequential import Prober
from search.program import Program
from search.rollouts import RolloutConfig
from search.sampling import JudgeFn, config_from_dict
from search.tree import Node, Tree

NAME = "linear"


@dataclass(frozen=True)
class LinearConfig(LabelRules):
    trust_answer: bool = False  # Math-Shepherd rolls out every step, whatever the final answer
    k: int = 4  # rollouts per step
    rollout: RolloutConfig = field(default_factory=RolloutConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k < 1:
            raise ValueError("linear: k must be >= 1")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LinearConfig:
        return config_from_dict(cls, data)


def label(tree: Tree, paths: list[list[Node]], problem: Problem, prompt: str, cfg: LinearConfig,
          judge: JudgeFn) -> Program[LabelResult]:
    evidence = Evidence.of(tree, paths, Prober(cap=cfg.k, batch=cfg.k, until="count"), cfg)
    cost = yield from probe(paths, evidence, "linear", Caps(), problem, prompt, cfg.rollout, judge)
    return finish(NAME, evidence, paths, cost)
