"""Label quality against ground truth: ProcessBench first-error F1, per-step accuracy, labeling cost.

Pure functions over lists, plus ``evaluate_tables`` / ``evaluate_strategies`` over the stored Arrow tables
(``solutions``, ``step_labels``, ``rollouts``) so ``tracemill eval labels`` can score a finished run, every
labeling strategy in it separately. Only solutions whose ``true_first_error`` is known are scored. A missing prediction (None: the strategy could not decide, or the
question was filtered) counts as wrong, so a strategy cannot look better by abstaining; ``coverage`` says
how often it did.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class LabelQuality:
    n_solutions: int  # scored solutions (true first error known)
    acc_erroneous: float  # ProcessBench: share of erroneous solutions whose predicted index is the true one
    acc_error_free: float  # share of error-free solutions predicted -1
    f1: float  # harmonic mean of the two; nan if either group is empty
    coverage: float  # share of solutions with a prediction (not None)
    step_accuracy: float  # labeled steps whose hard label matches the truth
    step_coverage: float  # labeled steps / all steps
    rollouts_per_solution: float
    tokens_per_solution: float


def _mean(hits: list[bool]) -> float:
    return sum(hits) / len(hits) if hits else math.nan


def first_error_scores(predicted: Sequence[int | None], true: Sequence[int]) -> tuple[float, float, float]:
    """(accuracy on erroneous, accuracy on error-free, F1) as in ProcessBench."""
    if len(predicted) != len(true):
        raise ValueError(f"{len(predicted)} predictions for {len(true)} solutions")
    erroneous = [p == t for p, t in zip(predicted, true, strict=True) if t >= 0]
    error_free = [p == -1 for p, t in zip(predicted, true, strict=True) if t < 0]
    a, b = _mean(erroneous), _mean(error_free)
    f1 = 2 * a * b / (a + b) if a + b > 0 else (math.nan if math.isnan(a + b) else 0.0)
    return a, b, f1


def step_scores(step_labels: Sequence[Sequence[bool | None]], true: Sequence[int]) -> tuple[float, float]:
    """(accuracy, coverage) of per-step hard labels; step i is truly good iff true < 0 or i < true."""
    hits, total = [], 0
    for labels, t in zip(step_labels, true, strict=True):
        total += len(labels)
        hits += [hard == (t < 0 or i < t) for i, hard in enumerate(labels) if hard is not None]
    return _mean(hits), (len(hits) / total if total else math.nan)


def evaluate(predicted: Sequence[int | None], true: Sequence[int],
             step_labels: Sequence[Sequence[bool | None]], rollouts: int, rollout_tokens: int) -> LabelQuality:
    """Scores of one strategy's output over solutions aligned with ``true`` (their true first errors)."""
    n = len(true)
    a, b, f1 = first_error_scores(predicted, true)
    step_acc, step_cov = step_scores(step_labels, true)
    covered = sum(p is not None for p in predicted)
    return LabelQuality(n, a, b, f1, covered / n if n else math.nan, step_acc, step_cov,
                        rollouts / n if n else math.nan, rollout_tokens / n if n else math.nan)


def evaluate_tables(solutions: pa.Table, step_labels: pa.Table, rollouts: pa.Table | None = None,
                    strategy: str | None = None) -> LabelQuality:
    """``evaluate`` over stored tables; ``strategy`` picks one strategy's rows from ``step_labels``.

    A solution's predicted first error is its first step that strategy labeled bad (-1 if all are good,
    None if an unlabeled step comes first), exactly as the strategy computed it; every solution with ground
    truth is scored, so problems the strategy did not label count as undetermined. Cost counts the rows of
    ``rollouts`` on the problems the strategy labeled (rollouts shared by two strategies count for both).
    """
    labels = [r for r in step_labels.to_pylist() if strategy is None or r["strategy"] == strategy]
    hard = {r["node_id"]: r["hard"] for r in labels}
    labeled = {r["problem_id"] for r in labels}
    scored = [s for s in solutions.to_pylist() if s["true_first_error"] is not None]
    steps = [[hard.get(nid) for nid in s["node_ids"]] for s in scored]
    taken = [r for r in rollouts.select(["problem_id", "n_tokens"]).to_pylist() if r["problem_id"] in labeled] \
        if rollouts is not None else []
    return evaluate([_first_bad(s) for s in steps], [s["true_first_error"] for s in scored], steps,
                    len(taken), sum(r["n_tokens"] for r in taken))


def evaluate_strategies(solutions: pa.Table, step_labels: pa.Table,
                        rollouts: pa.Table | None = None) -> dict[str, LabelQuality]:
    """``evaluate_tables`` for every strategy that has rows in ``step_labels``, by name."""
    names = sorted(set(step_labels.column("strategy").to_pylist()))
    return {name: evaluate_tables(solutions, step_labels, rollouts, name) for name in names}


def _first_bad(hards: list[bool | None]) -> int | None:
    """First step labeled bad; -1 if all are good; None if an unlabeled step comes first."""
    for i, hard in enumerate(hards):
        if hard is None:
            return None
        if not hard:
            return i
    return -1
