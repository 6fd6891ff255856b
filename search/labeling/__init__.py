"""Labeling strategies, found by name: each module has a frozen config and the same ``label`` signature.

``label(tree, paths, problem, prompt, cfg, judge) -> Program[LabelResult]`` takes the problem's tree and its
solutions as paths of nodes, yields rollout requests (it never calls an engine) and returns per-node labels
plus each solution's predicted first error. Every config extends ``LabelRules`` (the decision rule, whether
a correct answer is trusted, overrides, a checker), so those options read the same for every strategy. A new
strategy is one module plus one entry in ``STRATEGIES``.

Example::

    strategy = STRATEGIES["binary"]
    cfg = strategy.config.from_dict({"k": 4})
    result = run_program(strategy.label(tree, paths, problem, prompt, cfg, judge), engine.generate)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from search.labeling import adaptive, binary, linear, mcts
from search.labeling.base import SOURCES, LabelResult, LabelRules, NodeLabel, first_error
from search.labeling.rows import rows


@dataclass(frozen=True)
class Strategy:
    config: type  # frozen dataclass with ``from_dict`` (unknown keys rejected)
    label: Callable[..., Any]  # (tree, paths, problem, prompt, cfg, judge) -> Program[LabelResult]


STRATEGIES: dict[str, Strategy] = {
    linear.NAME: Strategy(linear.LinearConfig, linear.label),
    binary.NAME: Strategy(binary.BinaryConfig, binary.label),
    adaptive.NAME: Strategy(adaptive.AdaptiveConfig, adaptive.label),
    mcts.NAME: Strategy(mcts.MctsConfig, mcts.label),
}


def make_config(name: str, options: Mapping[str, Any]) -> Any:
    """The named strategy's config from a plain mapping (e.g. ``labeling.options`` of a run config)."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown labeling strategy {name!r}; known: {sorted(STRATEGIES)}")
    return STRATEGIES[name].config.from_dict(options)


__all__ = ["SOURCES", "STRATEGIES", "LabelResult", "LabelRules", "NodeLabel", "Strategy", "first_error",
           "make_config", "rows"]
