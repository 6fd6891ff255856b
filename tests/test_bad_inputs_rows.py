"""No single row stops a run: every malformed row of tests/fixtures/bad_rows/ is a reject with its reason,
the good rows of the same file load, and a sim run over a file mixing both completes and validates.

The fixtures (and expected.json, the reason each bad row must give) are written by
tests/fixtures/bad_rows/make_fixtures.py; rows too big to commit are built here (``huge_rows``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cluster.problems import loaders
from cluster.problems.loaders import MAX_QUESTION_CHARS, MAX_ROW_CHARS, LoadError
from pipelines.cli import app
from verifier.answers import gold_error


def load_problems(paths, fmt=None):  # noqa: ANN001, ANN202 - the loader with the verifier's gold check, as a run reads files
    return loaders.load_problems(paths, fmt, gold_check=gold_error)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "bad_rows"
EXPECTED: dict[str, dict] = json.loads((FIXTURES / "expected.json").read_text())
SIM = Path(__file__).resolve().parent.parent / "configs" / "sim.toml"
runner = CliRunner()


def _good(i: int) -> str:
    return json.dumps({"question": f"good {i}: Ann has {i} pens and gets 2 more. How many?",
                       "answer": f"{i} + 2 = {i + 2}\n#### {i + 2}"})


def huge_rows(path: Path) -> dict:
    """A JSONL file of the rows too big to commit, between good rows; returns its expected.json entry."""
    rows = [
        _good(1),
        '{"question": "q1", "answer": "#### 1", "x": ' + "[" * 200_000 + "]" * 200_000 + "}",  # the issue's
        json.dumps({"question": "q2", "answer": "#### 2", "blob": "z" * (MAX_ROW_CHARS + 1)}),
        json.dumps({"question": "q" * (MAX_QUESTION_CHARS + 1), "answer": "#### 3"}),
        _good(2),
    ]
    path.write_text("\n".join(rows) + "\n")
    return {"format": None, "good": 2, "bad": {"2": "nested too deeply", "3": "row too long", "4": "too long"}}


def huge_array(path: Path) -> dict:
    """The same deep nesting inside a JSON array file: one element is rejected, not the file."""
    good = {"problem": "good 1: 1+1?", "answer": "2"}
    path.write_text("[" + json.dumps(good) + ', {"problem": "p", "answer": "1", "x": ' + "[" * 200_000
                    + "]" * 200_000 + "}, " + json.dumps({**good, "problem": "good 2: 2+2?", "answer": "4"}) + "]")
    return {"format": None, "good": 2, "bad": {"2": "nested too deeply"}}


def _check_file(path: Path, expected: dict) -> tuple[int, int]:
    """Assert every bad row of ``path`` is a reject with its expected reason; (rejects, problems) loaded."""
    problems, rejects = load_problems(path, expected["format"])
    by_row = {r["source"].rsplit(":", 1)[1]: r for r in rejects}
    assert len(by_row) == len(rejects), "one reject per row"
    assert sorted(by_row, key=int) == sorted(expected["bad"], key=int), path.name
    for row, reason in expected["bad"].items():
        got = by_row[row]
        assert reason in got["reason"], (path.name, row, got["reason"])
        assert got["stage"] == "load" and got["source"] == f"{path}:{row}"
        for value in got.values():  # a reject must always be storable as Parquet text
            value.encode("utf-8")
    assert len(problems) == expected["good"], path.name
    assert all(p.question.startswith("good") for p in problems), [p.question[:40] for p in problems]
    return len(rejects), len(problems)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_bad_row_is_a_reject_with_its_reason_and_the_good_rows_load(name):
    expected = EXPECTED[name]
    assert _check_file(FIXTURES / name, expected) == (len(expected["bad"]), expected["good"])


def test_rows_too_big_to_commit_are_rejects_too(tmp_path):
    for path, build in ((tmp_path / "huge.jsonl", huge_rows), (tmp_path / "huge.json", huge_array)):
        expected = build(path)
        assert _check_file(path, expected) == (len(expected["bad"]), expected["good"])


def test_the_fixture_set_is_at_least_the_issues_size():
    files = len(EXPECTED) + 2  # + the two files huge_rows / huge_array build
    bad = sum(len(e["bad"]) for e in EXPECTED.values()) + 4
    assert files >= 18 and bad >= 61, (files, bad)


def test_unknown_keys_are_kept_in_meta_and_never_reject_a_row():
    problems, _ = load_problems(FIXTURES / "unknown_first.jsonl")
    assert problems[0].meta["source_url"] == "http://example.org" and problems[0].meta["difficulty"] == 3
    assert problems[1].meta["tags"] == ["a", "b"]


def test_crlf_bom_and_integer_answers_are_normalised():
    problems, _ = load_problems(FIXTURES / "bom_crlf.jsonl")
    assert [p.gold_answer for p in problems] == ["4", "5", "6"] and "\r" not in problems[0].question
    problems, _ = load_problems(FIXTURES / "int_answers.parquet")
    assert [p.gold_answer for p in problems] == ["7", "10"]


@pytest.mark.parametrize("fmt, content", [
    ("math", [_good(1), _good(2)]),  # the issue's case: format=math on a GSM8K file
    ("processbench", [json.dumps({"problem": "p", "answer": "1"})]),
    ("gsm8k", [json.dumps({"problem": "p", "answer": "1"})]),
])
def test_a_forced_format_that_matches_no_row_is_a_load_error(tmp_path, fmt, content):
    path = tmp_path / "f.jsonl"
    path.write_text("\n".join(content) + "\n")
    with pytest.raises(LoadError, match=f"format '{fmt}' matches no row") as err:
        load_problems(path, fmt)
    assert "\n" not in str(err.value)


def test_a_forced_format_that_matches_no_row_exits_2_before_anything_is_written(tmp_path):
    path = tmp_path / "gsm.jsonl"
    path.write_text(_good(1) + "\n")
    root = tmp_path / "data"
    result = runner.invoke(app, ["run", "-c", str(SIM), "--set", f"problems.source={path}",
                                 "--set", "problems.format=math", "--set", f"storage.root={root}"])
    assert result.exit_code == 2, result.output
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert len(lines) == 1 and "matches no row" in lines[0] and "'gsm8k'" in lines[0], result.output
    assert not root.exists()


def test_a_run_over_good_and_bad_rows_completes_and_validates(tmp_path):
    """Every JSONL fixture of GSM8K rows plus the huge rows in one file: a sim run stores the good rows as
    problems and every bad one as a reject with its reason, and ``tracemill validate`` passes."""
    names = ["encoding.jsonl", "numbers.jsonl", "nesting.jsonl", "types.jsonl", "json.jsonl", "bom_crlf.jsonl",
             "unknown_first.jsonl", "gold_gsm8k.jsonl", "duplicates.jsonl"]  # the GSM8K-format fixtures
    huge = tmp_path / "huge.jsonl"
    entries = [EXPECTED[n] for n in names] + [huge_rows(huge)]
    parts = [(FIXTURES / n).read_bytes().removeprefix(b"\xef\xbb\xbf") for n in names] + [huge.read_bytes()]
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(b"".join(parts))
    problems, rejects = load_problems(mixed)
    good = sum(e["good"] for e in entries)  # good rows repeat across files: the repeats are duplicates here
    assert all(p.question.startswith("good") for p in problems)
    assert len(rejects) == sum(len(e["bad"]) for e in entries) + good - len(problems)
    root = tmp_path / "data"
    result = runner.invoke(app, ["run", "-c", str(SIM), "--set", f"problems.source={mixed}",
                                 "--set", f"storage.root={root}", "--set", "engine.replicas=1",
                                 "--set", "ray.num_cpus=2", "--set", "sampling.n_solutions=2",
                                 "--run-id", "mixed", "--no-progress", "--no-report"])
    assert result.exit_code == 0, result.output
    assert "validate mixed: ok" in result.output, result.output
    out = runner.invoke(app, ["sql", "SELECT (SELECT count(*) FROM problems) AS p, (SELECT count(*) FROM rejects "
                                     "WHERE stage = 'load') AS r, (SELECT count(*) FROM rejects WHERE stage = 'load'"
                                     " AND reason = '') AS blank", "--root", str(root), "--format", "json"])
    assert json.loads(out.output) == {"p": len(problems), "r": len(rejects), "blank": 0}, out.output
    assert runner.invoke(app, ["validate", "mixed", "--root", str(root)]).exit_code == 0
    before = sorted((str(p), p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    changed = runner.invoke(app, ["run", "-c", str(SIM), "--set", f"problems.source={mixed}",
                                  "--set", f"storage.root={root}", "--resume", "mixed", "--no-progress"])
    assert changed.exit_code == 2 and "engine.replicas, ray.num_cpus, sampling.n_solutions" in changed.stderr
    assert sorted((str(p), p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before
