"""Problem loaders: real GSM8K / MATH-500 / ProcessBench slices, and bad rows that become rejects."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cluster.problems import loaders
from cluster.problems.loaders import MAX_QUESTION_CHARS, LoadError, load_arith
from cluster.problems.problem import problem_id
from storage.rejects import REJECT_ROW_BYTES, TRUNCATION_MARK
from tests.shared_data import DATA
from verifier.answers import gold_error


def load_problems(paths, fmt=None):  # noqa: ANN001, ANN202 - the loader with the verifier's gold check, as a run reads files
    return loaders.load_problems(paths, fmt, gold_check=gold_error)

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared data not mounted")


def _head(src: Path, dst: Path, n: int) -> Path:
    with src.open("rb") as f:
        dst.write_bytes(b"".join(next(f) for _ in range(n)))
    return dst


def _jsonl(path: Path, lines: list[bytes | str]) -> Path:
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines) + b"\n")
    return path


def _gsm(q: str, gold: str) -> str:
    return json.dumps({"question": q, "answer": f"Work.\n#### {gold}"})


@needs_data
def test_gsm8k_slice(tmp_path):
    problems, rejects = load_problems(_head(DATA / "gsm8k/test.jsonl", tmp_path / "g.jsonl", 5))
    assert rejects == [] and len(problems) == 5
    first = problems[0]
    assert first.gold_answer == "18" and first.source == "gsm8k"
    assert first.question.startswith("Janet")
    assert first.problem_id == problem_id("gsm8k", first.question)
    assert first.meta["solution"].endswith("every day at the farmer\u2019s market.")


@needs_data
def test_gsm8k_gold_with_thousands_separator_is_stripped(tmp_path):
    rows = [line for line in (DATA / "gsm8k/test.jsonl").read_text().splitlines()
            if "," in json.loads(line)["answer"].rpartition("####")[2]][:1]
    problems, _ = load_problems(_jsonl(tmp_path / "c.jsonl", rows))
    assert problems[0].gold_answer == "2125"


@needs_data
def test_math500_slice(tmp_path):
    problems, rejects = load_problems(_head(DATA / "math500/test.jsonl", tmp_path / "m.jsonl", 4))
    assert rejects == [] and len(problems) == 4
    assert problems[0].gold_answer == r"\left( 3, \frac{\pi}{2} \right)" and problems[0].source == "math"
    assert problems[0].meta["unique_id"] == "test/precalculus/807.json" and problems[0].meta["level"] == 2


@needs_data
def test_processbench_keeps_steps_and_label_and_every_solution_of_a_repeated_problem(tmp_path):
    rows = json.loads((DATA / "processbench/gsm8k.json").read_text())
    by_problem: dict[str, list[dict]] = {}
    for row in rows:
        by_problem.setdefault(row["problem"], []).append(row)
    repeated = next(group for group in by_problem.values() if len(group) > 1)
    sliced = rows[:3] + repeated
    path = tmp_path / "pb.json"
    path.write_text(json.dumps(sliced, indent=2))
    problems, rejects = load_problems(path)
    assert rejects == [] and len(problems) == len(sliced)
    first = problems[0]
    assert first.gold_answer == "" and first.source == "processbench:gsm8k-0"
    assert first.meta["label"] == 1 and first.meta["steps"] == rows[0]["steps"]
    assert first.meta["generator"] == "Qwen2-7B-Instruct" and first.meta["id"] == "gsm8k-0"
    assert len({p.problem_id for p in problems}) == len(sliced)


@needs_data
@pytest.mark.parametrize("name, rows", [("gsm8k/test.jsonl", 1319), ("math500/test.jsonl", 500),
                                        ("processbench/gsm8k.json", 400)])
def test_whole_real_files_load_cleanly(name, rows):
    problems, rejects = load_problems(DATA / name)
    assert len(problems) == rows and rejects == []


def test_parquet_file(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pylist([
        {"problem": "What is 1+1?", "answer": "2", "level": 1},
        {"problem": "", "answer": "3", "level": 2},
    ]), path)
    problems, rejects = load_problems(path)
    assert [(p.question, p.gold_answer, p.meta) for p in problems] == [("What is 1+1?", "2", {"level": 1})]
    assert rejects[0]["source"] == f"{path}:2" and "empty 'problem'" in rejects[0]["reason"]


def test_bad_rows_become_rejects_and_the_rest_loads(tmp_path):
    path = _jsonl(tmp_path / "bad.jsonl", [
        _gsm("Q1?", "1"),                                     # 1 ok
        '{"question": "Q2?", "answer": "#### 2"',             # 2 malformed JSON
        b'{"question": "Q3 \xff?", "answer": "#### 3"}',      # 3 not UTF-8
        "[1, 2]",                                             # 4 not an object
        json.dumps({"question": "Q5?"}),                      # 5 missing answer
        json.dumps({"question": "Q6?", "answer": "6"}),       # 6 no #### mark
        _gsm("Q7?", "seven"),                                 # 7 unparsable gold
        _gsm("   ", "8"),                                     # 8 empty question
        _gsm("x" * (MAX_QUESTION_CHARS + 1), "9"),            # 9 over-long question
        _gsm("Q1?", "1"),                                     # 10 duplicate of line 1
        "",                                                   # 11 blank: skipped silently
        _gsm("Q12?", "1,234"),                                # 12 ok
        json.dumps({"question": 12, "answer": "#### 1"}),     # 13 question not a string
        "42",                                                 # 14 not an object
    ])
    problems, rejects = load_problems(path)
    assert [(p.question, p.gold_answer) for p in problems] == [("Q1?", "1"), ("Q12?", "1234")]
    by_line = {int(r["source"].rsplit(":", 1)[1]): r["reason"] for r in rejects}
    assert sorted(by_line) == [2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 14]
    assert by_line[2].startswith("malformed JSON")
    assert by_line[3].startswith("not UTF-8")
    assert by_line[4] == "row is a JSON array, not an object"
    assert "'answer'" in by_line[5]
    assert "####" in by_line[6] and "####" in by_line[7]
    assert by_line[8] == "empty 'question'"
    assert "too long" in by_line[9]
    assert by_line[10] == "duplicate"
    assert "'question'" in by_line[13]
    assert by_line[14] == "row is a JSON number, not an object"
    for r in rejects:
        assert r["stage"] == "load" and r["source"].startswith(str(path)) and len(r["row"].encode()) <= REJECT_ROW_BYTES
    assert next(r for r in rejects if r["reason"] == "duplicate")["row"] == _gsm("Q1?", "1")


def test_processbench_rows_with_bad_steps_or_labels_are_rejected(tmp_path):
    good = {"id": "x-0", "generator": "g", "problem": "P?", "steps": ["a", "b"], "label": -1,
            "final_answer_correct": True}
    rows = [good, {**good, "id": "x-1", "label": 2}, {**good, "id": "x-2", "steps": []},
            {**good, "id": "x-3", "steps": ["a", 3]}, {**good, "id": "x-4", "label": True}, "text",
            {**good, "id": 5}]
    path = tmp_path / "pb.json"
    path.write_text(json.dumps(rows))
    problems, rejects = load_problems(path)
    assert [p.meta["id"] for p in problems] == ["x-0"]
    assert [r["source"].rsplit(":", 1)[1] for r in rejects] == ["2", "3", "4", "5", "6", "7"]


def test_duplicates_are_dropped_across_files(tmp_path):
    a = _jsonl(tmp_path / "a.jsonl", [_gsm("Same?", "1")])
    b = _jsonl(tmp_path / "b.jsonl", [_gsm("Same?", "1"), _gsm("Other?", "2")])
    problems, rejects = load_problems([a, b])
    assert [p.question for p in problems] == ["Same?", "Other?"]
    assert [(r["source"], r["reason"]) for r in rejects] == [(f"{b}:1", "duplicate")]


def test_reject_row_text_is_truncated(tmp_path):
    path = _jsonl(tmp_path / "long.jsonl", [_gsm("ok?", "1"), '{"question": "' + "y" * 10_000])
    _, rejects = load_problems(path)
    row = rejects[0]["row"]
    assert len(row.encode()) <= REJECT_ROW_BYTES and row.endswith(TRUNCATION_MARK) and row.startswith('{"question": "yyy')


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    (b"", "no JSON object rows"),
    (b"not json\n", "no JSON object rows"),
    (b'{"title": "x", "body": "y"}\n', "unknown format"),
    (b"[1, 2", "no JSON object rows"),  # a truncated array of non-objects
])
def test_file_level_problems_raise_a_one_line_load_error(tmp_path, content, message):
    path = tmp_path / "f.jsonl"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(LoadError, match=message) as err:
        load_problems(path)
    assert isinstance(err.value, ValueError) and "\n" not in str(err.value)


def test_corrupt_parquet_and_unknown_forced_format_raise_load_error(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(LoadError):
        load_problems(path)
    with pytest.raises(LoadError, match="unknown format"):
        load_problems(_jsonl(tmp_path / "x.jsonl", [_gsm("Q?", "1")]), fmt="csv")


def test_forced_format_overrides_detection(tmp_path):
    path = _jsonl(tmp_path / "x.jsonl", [json.dumps({"problem": "P?", "answer": "1", "question": "Q?"})])
    assert load_problems(path)[0][0].source == "math"
    assert load_problems(path, fmt="gsm8k")[1][0]["reason"].startswith("answer has no")


def test_load_arith_wraps_the_generator():
    problems = load_arith(10, seed=3, mix={2: 0.5, 12: 0.5})
    assert problems == load_arith(10, seed=3, mix={2: 0.5, 12: 0.5})
    for p in problems:
        assert p.source == "arith" and p.gold_answer == str(p.meta["chain"][-1])
        assert p.meta["n_ops"] in (2, 12) and len(p.meta["ops"]) == p.meta["n_ops"]
    assert len({p.problem_id for p in problems}) == 10
