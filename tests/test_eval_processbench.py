"""ProcessBench evaluation: predictions files, per-subset F1, PRM thresholds, arith and consensus verifiers."""

from __future__ import annotations

import json
import math

import pytest

from pipelines.evaluate.processbench import (
    SUBSETS,
    EvalOptions,
    choose_threshold,
    eval_processbench,
    first_below,
    score_predictions,
    write_predictions,
)

GOOD = ["Add: 2 + 3 = 5.", "The answer is 5."]
WRONG_CLAIM = ["Add: 2 + 3 = 6.", "The answer is 6."]
LOGIC_SLIP = ["Subtract instead: 3 - 2 = 1.", "The answer is 1."]  # arithmetic right, reasoning wrong


@pytest.fixture
def data_dir(tmp_path):
    for subset in SUBSETS:
        rows = [{"id": f"{subset}-0", "problem": "2 plus 3?", "steps": GOOD, "label": -1},
                {"id": f"{subset}-1", "problem": "2 plus 3?", "steps": WRONG_CLAIM, "label": 0},
                {"id": f"{subset}-2", "problem": "2 plus 3?", "steps": LOGIC_SLIP, "label": 0}]
        (tmp_path / f"{subset}.json").write_text(json.dumps(rows))
    return tmp_path


def test_score_predictions_per_subset_and_average(data_dir, tmp_path):
    preds = [{"id": f"{s}-{i}", "subset": s, "predicted": p} for s in SUBSETS for i, p in enumerate([-1, 0, -1])]
    preds[-1]["predicted"] = 0  # omnimath gets every row right
    table = score_predictions(write_predictions(tmp_path / "p.jsonl", preds), data_dir)
    by = {r["subset"]: r for r in table}
    assert by["gsm8k"]["acc_erroneous"] == 0.5 and by["gsm8k"]["acc_error_free"] == 1.0
    assert by["gsm8k"]["f1"] == pytest.approx(2 / 3) and by["omnimath"]["f1"] == 1.0
    assert by["average"]["f1"] == pytest.approx((3 * 2 / 3 + 1) / 4)


def test_missing_rows_lower_coverage_and_null_counts_wrong(data_dir, tmp_path):
    preds = [{"id": "gsm8k-0", "subset": "gsm8k", "predicted": None}, {"id": "gsm8k-1", "subset": "gsm8k",
                                                                         "predicted": 0}]
    by = {r["subset"]: r for r in score_predictions(write_predictions(tmp_path / "p.jsonl", preds), data_dir)}
    assert by["gsm8k"]["coverage"] == pytest.approx(2 / 3) and by["gsm8k"]["acc_error_free"] == 0.0
    assert by["math"]["n"] == 0 and math.isnan(by["math"]["f1"])


def test_arith_verifier_catches_wrong_claims_only(data_dir, tmp_path):
    eval_processbench("arith", tmp_path / "out", EvalOptions(data_dir=data_dir))
    preds = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert [p["predicted"] for p in preds if p["subset"] == "math"] == [-1, 0, -1]
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    assert result["scores"][-1]["f1"] == pytest.approx(2 / 3)


def test_consensus_strict_adds_tool_errors_to_mc(data_dir, tmp_path):
    mc = [{"id": f"{s}-{i}", "subset": s, "predicted": p} for s in SUBSETS for i, p in enumerate([-1, -1, 0])]
    mc_file = write_predictions(tmp_path / "mc.jsonl", mc)
    table = eval_processbench("consensus", tmp_path / "c", EvalOptions(data_dir=data_dir, predictions=mc_file))
    assert table[-1]["f1"] == 1.0  # MC caught the logic slip, the tool the wrong claim
    assert eval_processbench("mc", tmp_path / "m", EvalOptions(data_dir=data_dir,
                                                                predictions=mc_file))[-1]["f1"] < 1.0


def test_prm_threshold_is_the_best_f1_and_first_below():
    scores = [[0.9, 0.8], [0.3, 0.2], [0.9, 0.6]]
    labels = [-1, 0, 1]
    t = choose_threshold(scores, labels)
    assert 0.6 < t <= 0.8 and [first_below(s, t) for s in scores] == labels
    assert first_below([float("nan"), 0.1], 0.5) == 1


def test_unknown_verifier_and_mc_without_file_are_errors(data_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown verifier"):
        eval_processbench("oracle", tmp_path, EvalOptions(data_dir=data_dir))
    with pytest.raises(ValueError, match="predictions file"):
        eval_processbench("mc", tmp_path, EvalOptions(data_dir=data_dir))
