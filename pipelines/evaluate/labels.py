"""``tracemill eval labels``: score a stored run's step labels against the ground truth stored with it."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from pipelines.evaluate.scores import evaluate_strategies
from storage.catalog import Catalog


def label_quality(root: Path, run_id: str) -> dict[str, dict[str, object]]:
    """Per labeling strategy of the run (by name): first-error F1, per-step accuracy, rollouts/tokens per solution.

    Example: ``label_quality(root, run_id)["adaptive"]["f1"]``.
    """
    with Catalog(root) as cat:
        solutions = cat.sql("SELECT * FROM solutions", run_id=run_id)
        labels = cat.sql("SELECT * FROM step_labels", run_id=run_id)
        rollouts = cat.sql("SELECT * FROM rollouts", run_id=run_id)
    if solutions.num_rows == 0:
        raise ValueError(f"run {run_id!r} has no solutions under {root}")
    truth = solutions.column("true_first_error").drop_null()
    if len(truth) == 0:
        raise ValueError(f"run {run_id!r} has no ground truth (only sim-engine runs and given solutions do)")
    if labels.num_rows == 0:
        raise ValueError(f"run {run_id!r} has no step labels")
    return {name: asdict(q) for name, q in evaluate_strategies(solutions, labels, rollouts).items()}
