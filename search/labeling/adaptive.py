"""Adaptive labeling: sample a small batch at a time per probed step and stop once the label is decided.

Under the hard rule a step is decided by its first correct rollout (good) or by ``max_per_step`` failures
(bad); with ``target = "soft"``, once the Beta(1 + s, 1 + f) posterior's central ``level`` interval is
narrower than ``width``. Under a soft rule (``rule = "threshold" | "drop"``) a sequential test of the value
against the step's threshold decides: stop once the posterior puts ``level`` of its mass on one side (see
``sequential``), or at ``max_per_step``. Most good steps cost one or two rollouts instead of k. ``search``
picks the probed steps: "binary" (the binary-search positions of ``binary``, so adaptive+binary costs about
log n small probes per solution) or "linear" (every step). Budgets cap rollouts per solution and per
problem; a step whose probe hits a cap is judged on the rollouts it has.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cluster.problems.problem import Problem
from search.labeling.base import Evidence, LabelResult, LabelRules, finish
from search.labeling.probe import SEARCHES, Caps, probe
from search.labeling.sequential import Prober
from search.program import Program
from search.rollouts import RolloutConfig
from search.sampling import JudgeFn, config_from_dict
from search.tree import Node, Tree

NAME = "adaptive"
TARGETS = {"hard": "success", "soft": "width"}  # hard rule: label kind -> Prober stopping rule


@dataclass(frozen=True)
class AdaptiveConfig(LabelRules):
    search: str = "binary"  # "binary" | "linear": which steps are probed
    target: str = "hard"  # hard rule only: "hard" stops at the first success, "soft" when the posterior is narrow
    batch: int = 1  # rollouts per probe round
    max_per_step: int = 6  # failures that make a step bad (hard), or the most rollouts per step
    max_per_solution: int | None = None  # rollout budgets; None = unlimited
    max_per_problem: int | None = None
    width: float = 0.3  # target "soft": stop when the credible interval is narrower than this
    rollout: RolloutConfig = field(default_factory=RolloutConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.search not in SEARCHES:
            raise ValueError(f"adaptive: search must be one of {sorted(SEARCHES)}, got {self.search!r}")
        if self.target not in TARGETS:
            raise ValueError(f"adaptive: target must be one of {sorted(TARGETS)}, got {self.target!r}")
        if self.target == "soft" and self.rule != "hard":
            raise ValueError("adaptive: target 'soft' samples for the hard rule; a soft rule has its own test")
        if not 1 <= self.batch <= self.max_per_step:
            raise ValueError("adaptive: need 1 <= batch <= max_per_step")
        if any(c is not None and c < 1 for c in (self.max_per_solution, self.max_per_problem)):
            raise ValueError("adaptive: budgets must be >= 1 (or None for unlimited)")
        if not 0 < self.width < 1:
            raise ValueError("adaptive: width must lie in (0, 1)")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AdaptiveConfig:
        return config_from_dict(cls, data)


def label(tree: Tree, paths: list[list[Node]], problem: Problem, prompt: str, cfg: AdaptiveConfig,
          judge: JudgeFn) -> Program[LabelResult]:
    until = TARGETS[cfg.target] if cfg.rule == "hard" else "test"
    prober = Prober(cap=cfg.max_per_step, batch=cfg.batch, until=until, width=cfg.width, level=cfg.level)
    evidence = Evidence.of(tree, paths, prober, cfg)
    caps = Caps(per_solution=cfg.max_per_solution, per_problem=cfg.max_per_problem)
    cost = yield from probe(paths, evidence, cfg.search, caps, problem, prompt, cfg.rollout, judge)
    return finish(NAME, evidence, paths, cost, after_error=cfg.search != "binary")
