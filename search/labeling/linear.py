"""Linear labeling (Math-Shepherd): k rollouts at every step of every solution.

Solutions sharing a prefix share its nodes, so each node is rolled out once (topped up to k, reusing what
is already there). hard = value > 0, soft = value. A terminal step needs no rollout: its value is 1 or 0 by
its own answer. ``infer`` additionally marks a step good when a later step succeeded (see ``base``); off by
default so the labels are exactly Math-Shepherd's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from search.labeling.base import Evidence, LabelResult, finish
from search.labeling.probe import Caps, Prober, probe
from search.problems import Problem
from search.program import Program
from search.rollouts import RolloutConfig
from search.sampling import JudgeFn, config_from_dict
from search.tree import Node, Tree

NAME = "linear"


@dataclass(frozen=True)
class LinearConfig:
    k: int = 4  # rollouts per step
    infer: bool = False  # also mark steps good whose descendants succeeded
    rollout: RolloutConfig = field(default_factory=RolloutConfig)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError("linear: k must be >= 1")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LinearConfig:
        return config_from_dict(cls, data)


def label(tree: Tree, paths: list[list[Node]], problem: Problem, prompt: str, cfg: LinearConfig,
          judge: JudgeFn) -> Program[LabelResult]:
    prober = Prober(cap=cfg.k, batch=cfg.k, until="count")
    evidence = Evidence(tree, prober.decided, propagate_rollouts=cfg.infer, propagate_outcomes=cfg.infer)
    cost = yield from probe(paths, evidence, prober, "linear", Caps(), problem, prompt, cfg.rollout, judge)
    return finish(NAME, evidence, paths, cost)
