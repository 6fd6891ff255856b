"""Binary-search labeling (OmegaPRM's error locator): O(k log n) rollouts per solution.

Each solution is searched for its first step with MC value 0, assuming values fall monotonically along a
path: a probed step with a correct rollout moves the search right (every earlier step is then good,
``inferred`` where not rolled out), k failures move it left. Every rollout already on a node is reused, and
a step with any correct rollout is good without sampling more. Steps after the found error stay unlabeled
unless other evidence covers them.

OmegaPRM binary-searches only incorrect solutions: a correct final answer is itself a correct continuation
of every prefix, so under hard labels no step of a correct solution is bad. ``search_correct=True`` drops
that shortcut (the solution's own answer no longer vouches for its steps) to catch steps that were wrong
but recovered by chance.
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

NAME = "binary"


@dataclass(frozen=True)
class BinaryConfig:
    k: int = 4  # rollouts per probed step, sampled at once
    search_correct: bool = False  # also search solutions whose final answer is right
    rollout: RolloutConfig = field(default_factory=RolloutConfig)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError("binary: k must be >= 1")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BinaryConfig:
        return config_from_dict(cls, data)


def label(tree: Tree, paths: list[list[Node]], problem: Problem, prompt: str, cfg: BinaryConfig,
          judge: JudgeFn) -> Program[LabelResult]:
    prober = Prober(cap=cfg.k, batch=cfg.k, until="success")
    evidence = Evidence(tree, prober.decided, propagate_outcomes=not cfg.search_correct)
    cost = yield from probe(paths, evidence, prober, "binary", Caps(), problem, prompt, cfg.rollout, judge)
    return finish(NAME, evidence, paths, cost, after_error=False)
