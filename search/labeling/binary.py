"""Binary-search labeling (OmegaPRM's error locator): O(k log n) rollouts per solution.

Each solution is searched for its first bad step, assuming values fall along a path: a probed step that is
good moves the search right (every earlier step without rollouts is then good, ``inferred``), a bad one
moves it left. Every rollout already on a node is reused. Under the hard rule a step with any correct
rollout is good without sampling more; under a soft rule (``rule``) each probe takes all k and compares its
value with the threshold. A step whose own rollouts failed stays bad even when a later step succeeds
(unless ``override_failed``). Steps after the found error stay unlabeled unless other evidence covers them.

OmegaPRM binary-searches only incorrect solutions (``trust_answer = True``, the default): a correct final
answer is itself a correct continuation of every prefix. ``trust_answer = False`` searches them too, to
catch steps that were wrong but recovered by chance.
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

NAME = "binary"


@dataclass(frozen=True)
class BinaryConfig(LabelRules):
    k: int = 4  # rollouts per probed step, sampled at once
    rollout: RolloutConfig = field(default_factory=RolloutConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k < 1:
            raise ValueError("binary: k must be >= 1")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BinaryConfig:
        return config_from_dict(cls, data)


def label(tree: Tree, paths: list[list[Node]], problem: Problem, prompt: str, cfg: BinaryConfig,
          judge: JudgeFn) -> Program[LabelResult]:
    prober = Prober(cap=cfg.k, batch=cfg.k, until="success" if cfg.rule == "hard" else "count")
    evidence = Evidence.of(tree, paths, prober, cfg)
    cost = yield from probe(paths, evidence, "binary", Caps(), problem, prompt, cfg.rollout, judge)
    return finish(NAME, evidence, paths, cost, after_error=False)
