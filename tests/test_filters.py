"""Dataset filters drop exactly what they should, each with its reason in FILTERED rows."""

from __future__ import annotations

import pyarrow as pa
import pytest

from search.traces.filters import FilterConfig, apply_filters, load_eval_texts, minhash, shingles
from storage.schemas import FILTERED
from tests.shared_data import DATA

BASE = ("Tom has 3 bags with 16 marbles in each bag, so he has 3 * 16 = 48 marbles in total.\n\n"
        "He gives away one third of them to his sister, which is 48 / 3 = 16 marbles.\n\n"
        "So he keeps 48 - 16 = 32 marbles for himself. The answer is 32.\n\n")
NEAR = BASE.replace("for himself", "for his own")  # one phrase changed in the last step
OTHER = ("Ana reads 12 pages a day for 5 days, that is 12 * 5 = 60 pages.\n\n"
         "The book has 100 pages, so 100 - 60 = 40 pages are left. The answer is 40.\n\n")


def _table(rows: list[tuple[str, str, str]]) -> pa.Table:
    return pa.table({"trace_id": [r[0] for r in rows], "problem_id": [r[1] for r in rows],
                     "text": [r[2] for r in rows]})


def _run(rows, **kw):
    return apply_filters(_table(rows), FilterConfig(**kw), "traces", "r1")


def test_exact_duplicate_dropped_with_reason_naming_the_kept_row():
    res = _run([("a", "p", BASE), ("b", "p", BASE.replace(" ", "  ")), ("c", "q", OTHER)],
               steps=("exact_dup",))
    assert res.kept.column("trace_id").to_pylist() == ["a", "c"]
    [dropped] = res.filtered.to_pylist()
    assert dropped["row_id"] == "b" and dropped["filter"] == "exact_dup" and dropped["kept_id"] == "a"
    assert res.filtered.schema == FILTERED
    assert '"trace_id": "b"' in dropped["row_json"]


def test_near_duplicate_found_by_minhash_but_different_text_kept():
    res = _run([("a", "p", BASE), ("b", "p", NEAR), ("c", "q", OTHER)], steps=("near_dup",), threshold=0.7)
    assert res.kept.column("trace_id").to_pylist() == ["a", "c"]
    [dropped] = res.filtered.to_pylist()
    assert dropped["kept_id"] == "a" and "jaccard" in dropped["reason"]
    strict = _run([("a", "p", BASE), ("b", "p", NEAR)], steps=("near_dup",), threshold=0.99)
    assert strict.kept.num_rows == 2


def test_minhash_agreement_tracks_jaccard():
    a, b, c = (shingles(t, 3, "\n\n") for t in (BASE, NEAR, OTHER))
    sa, sb, sc = (minhash(s, 256, 0) for s in (a, b, c))
    true_ab = len(a & b) / len(a | b)
    assert abs((sa == sb).mean() - true_ab) < 0.12
    assert (sa == sc).mean() < 0.1


def test_shingles_do_not_cross_step_boundaries():
    grams = shingles("one two three\n\nfour five six\n\n", 3, "\n\n")
    assert grams == {"one two three", "four five six"}


def test_per_problem_cap_keeps_the_first_rows():
    rows = [(f"t{i}", "p", f"text {i} " * 5) for i in range(5)] + [("u", "q", OTHER)]
    res = _run(rows, steps=("per_problem_cap",), per_problem_cap=2)
    assert res.kept.column("trace_id").to_pylist() == ["t0", "t1", "u"]
    assert {r["filter"] for r in res.filtered.to_pylist()} == {"per_problem_cap"}
    assert res.filtered.num_rows == 3


def test_filters_chain_and_each_sees_only_kept_rows():
    rows = [("a", "p", BASE), ("b", "p", BASE), ("c", "p", NEAR), ("d", "p", OTHER)]
    res = _run(rows, threshold=0.7, per_problem_cap=1)
    assert res.kept.column("trace_id").to_pylist() == ["a"]
    assert [(r["row_id"], r["filter"]) for r in res.filtered.to_pylist()] == [
        ("b", "exact_dup"), ("c", "near_dup"), ("d", "per_problem_cap")]


GSM8K = DATA / "gsm8k" / "test.jsonl"
MATH500 = DATA / "math500"
PROCESSBENCH = DATA / "processbench" / "gsm8k.json"


@pytest.mark.skipif(not GSM8K.exists(), reason="eval data not present")
def test_decontamination_drops_rows_sharing_a_13gram_with_eval_sets():
    evals = {"gsm8k": load_eval_texts([GSM8K]), "math500": load_eval_texts([MATH500]),
             "processbench": load_eval_texts([PROCESSBENCH])}
    assert len(evals["gsm8k"]) == 1319 and len(evals["math500"]) == 500 and len(evals["processbench"]) == 400
    leaked = "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins."
    pb = evals["processbench"][0]
    rows = [("clean", "p", BASE), ("leak", "q", "Restating: " + leaked), ("pb", "r", pb[:200])]
    res = _run(rows, steps=("contamination",), eval_texts=evals)
    assert res.kept.column("trace_id").to_pylist() == ["clean"]
    reasons = {r["row_id"]: r["reason"] for r in res.filtered.to_pylist()}
    assert "gsm8k" in reasons["leak"] and "13-gram" in reasons["leak"]
    assert "gsm8k" in reasons["pb"]  # ProcessBench's gsm8k split reuses GSM8K test questions; first set wins
    only_pb = _run(rows, steps=("contamination",), eval_texts={"processbench": evals["processbench"]})
    assert {r["row_id"]: r["reason"] for r in only_pb.filtered.to_pylist()}["pb"].count("processbench") == 1


def test_decontamination_is_a_no_op_without_eval_sets():
    res = _run([("a", "p", BASE)], steps=("contamination",))
    assert res.kept.num_rows == 1 and res.filtered.num_rows == 0


def test_filter_config_rejects_unknown_filters():
    with pytest.raises(ValueError):
        FilterConfig(steps=("fuzzy",))
