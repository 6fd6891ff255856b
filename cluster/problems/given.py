"""Given solutions: a problem row that brings its own solution steps (ProcessBench) and the human label.

Such a problem is labeled instead of sampled: ``search.sampling.given_solutions`` inserts these steps into a
tree as they are. The label (earliest wrong step, -1 for none) is the ground truth of that solution.
"""

from __future__ import annotations

from cluster.problems.problem import Problem


def has_given_solution(problem: Problem) -> bool:
    return isinstance(problem.meta.get("steps"), list) and bool(problem.meta["steps"])


def given_steps(problem: Problem) -> list[str]:
    """The solution's steps, stripped (the delimiter is the run's own, added when they are joined)."""
    return [str(s).strip() for s in problem.meta["steps"]]


def given_label(problem: Problem) -> int | None:
    """The human label: index of the earliest wrong step, -1 when none is wrong, None when unlabeled."""
    label = problem.meta.get("label")
    return label if isinstance(label, int) and not isinstance(label, bool) else None
