import math

import pyarrow as pa
import pytest

from pipelines.evaluate.scores import (
    evaluate,
    evaluate_strategies,
    evaluate_tables,
    first_error_scores,
    step_scores,
)
from storage.schemas import SOLUTIONS, STEP_LABELS


def test_first_error_scores_follow_processbench():
    a, b, f1 = first_error_scores([2, 1, -1, -1, 0], [2, 3, -1, -1, -1])
    assert (a, b) == (0.5, 2 / 3)
    assert f1 == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))


def test_missing_predictions_count_as_wrong_and_empty_groups_give_nan():
    a, b, f1 = first_error_scores([None, -1], [1, -1])
    assert (a, b, f1) == (0.0, 1.0, 0.0)
    assert math.isnan(first_error_scores([-1], [-1])[2])
    with pytest.raises(ValueError):
        first_error_scores([1], [1, 2])


def test_step_scores_compare_hard_labels_with_the_true_first_error():
    acc, cov = step_scores([[True, False, None], [True, True]], [1, -1])
    assert (acc, cov) == (1.0, 0.8)
    acc, _ = step_scores([[True, True, False]], [1])
    assert acc == pytest.approx(2 / 3)


def test_evaluate_reports_cost_per_solution_and_coverage():
    q = evaluate([1, None], [1, -1], [[True, False], [None]], rollouts=10, rollout_tokens=300)
    assert (q.rollouts_per_solution, q.tokens_per_solution, q.coverage) == (5.0, 150.0, 0.5)


def _tables():
    sol = lambda sid, pid, nodes, fe, tfe: {"run_id": "r", "solution_id": sid, "problem_id": pid,  # noqa: E731
                                            "sample_index": 0, "text": "", "n_steps": len(nodes), "n_tokens": 0,
                                            "finish_reason": "eos", "answer": None, "correct": False,
                                            "node_ids": nodes, "first_error": fe, "true_first_error": tfe}
    solutions = pa.Table.from_pylist([sol("a", "p", ["n1", "n2"], 1, 1), sol("b", "p", ["n1"], -1, -1),
                                      sol("c", "q", ["n3"], 0, None)], schema=SOLUTIONS)
    lab = lambda nid, hard, strategy="binary": {"run_id": "r", "node_id": nid, "problem_id": "p",  # noqa: E731
                                               "strategy": strategy, "n": 1, "n_correct": int(hard),
                                               "value": float(hard), "hard": hard, "soft": float(hard),
                                               "label_source": "mc"}
    labels = pa.Table.from_pylist([lab("n1", True), lab("n2", False), lab("n1", True, "linear"),
                                   lab("n2", True, "linear")], schema=STEP_LABELS)
    rollouts = pa.table({"problem_id": ["p", "p", "q"], "n_tokens": [5, 7, 8]})
    return solutions, labels, rollouts


def test_evaluate_tables_reads_stored_rows_and_skips_solutions_without_truth():
    q = evaluate_tables(*_tables(), strategy="binary")
    assert (q.n_solutions, q.f1, q.step_accuracy, q.rollouts_per_solution, q.tokens_per_solution) == \
        (2, 1.0, 1.0, 1.0, 6.0)  # problem q's rollout is not binary's: it labeled only p


def test_evaluate_strategies_scores_each_strategy_by_its_own_labels():
    scores = evaluate_strategies(*_tables())
    assert sorted(scores) == ["binary", "linear"]
    assert scores["binary"].f1 == 1.0
    assert (scores["linear"].acc_erroneous, scores["linear"].acc_error_free) == (0.0, 1.0)  # it said all good


def test_label_quality_of_a_stored_run_has_one_entry_per_strategy(tmp_path):
    from pipelines.evaluate.labels import label_quality
    from storage.catalog import Catalog
    from tests.report_fixtures import make_run

    run_id = make_run(tmp_path)
    result = label_quality(tmp_path, run_id)
    assert sorted(result) == ["binary", "linear"]
    with Catalog(tmp_path) as cat:
        tables = [cat.sql(f"SELECT * FROM {t}", run_id=run_id) for t in ("solutions", "step_labels", "rollouts")]
    for name, metrics in result.items():
        assert metrics == evaluate_tables(*tables, strategy=name).__dict__
        assert metrics["n_solutions"] == tables[0].num_rows and metrics["coverage"] < 1  # half the problems each
