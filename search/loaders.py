"""Problem loaders: GSM8K / MATH / ProcessBench rows from JSONL, JSON-array or Parquet files, and ``arith``.

Bad rows never stop a load: each becomes a reject (``stage``, ``source`` = "file:line", ``row`` = raw text,
``reason``) and the rest loads, so nothing is dropped silently. Only a problem with the file as a whole (missing,
unreadable, no format recognised) raises ``LoadError``, which the CLI turns into exit code 2.

Example::

    >>> problems, rejects = load_problems("/work/shared/data/gsm8k/test.jsonl")  # doctest: +SKIP
    >>> problems[0].gold_answer, problems[0].source  # doctest: +SKIP
    ('18', 'gsm8k')
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from cluster import arith
from search.problems import Problem

MAX_QUESTION_CHARS = 64_000  # longer questions are almost surely broken rows, and blow up prompts
MAX_REJECT_ROW_CHARS = 4_000  # raw row text kept in a reject
GSM8K_MARK = "####"  # GSM8K answers end "#### <number>"
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")


class LoadError(ValueError):
    """The file as a whole can't be loaded (missing, unreadable, unknown format); the message is one line."""


class RowError(ValueError):
    """One row can't be used; the message is the reject reason."""


@dataclass(frozen=True)
class RowFormat:
    """A file format recognised by the keys of its rows, and how one row becomes a Problem."""

    keys: frozenset[str]  # a row with all of these keys has this format
    parse: Callable[[dict], Problem]


def load_problems(paths: str | Path | Iterable[str | Path],
                  fmt: str | None = None) -> tuple[list[Problem], list[dict]]:
    """Problems from one or more files, deduplicated by ``problem_id`` (first wins), plus the rejects.

    ``fmt`` forces a format name from ``FORMATS``; by default each file's format is detected from the keys
    of its first object row.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if fmt is not None and fmt not in FORMATS:
        raise LoadError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    problems: list[Problem] = []
    rejects: list[dict] = []
    seen: set[str] = set()
    for path in paths:
        rows = list(_read_rows(Path(path)))
        parse = FORMATS[fmt or _detect(path, rows)].parse
        for where, raw, row in rows:
            try:
                if isinstance(row, RowError):
                    raise row
                problem = parse(row)
            except RowError as err:
                rejects.append(_reject(where, raw, str(err)))
                continue
            if problem.problem_id in seen:
                rejects.append(_reject(where, raw, "duplicate"))
                continue
            seen.add(problem.problem_id)
            problems.append(problem)
    return problems, rejects


def load_arith(n: int, seed: int, mix: dict[int, float] | None = None) -> list[Problem]:
    """``n`` generated arith problems (``cluster.arith``); meta holds the true chain and the operations."""
    return [Problem.make(r["question"], r["gold_answer"], "arith", r["meta"])
            for r in map(arith.to_record, arith.generate(n, seed, mix))]


# ---------------------------------------------------------------- reading files

Row = tuple[str, str, dict | RowError]  # (file:line, raw text, the object or why the row is unusable)


def _read_rows(path: Path) -> Iterator[Row]:
    """Every row of a file in order; a row that isn't a JSON object carries the reason instead."""
    if not path.is_file():
        raise LoadError(f"no such file: {path}")
    if path.suffix == ".parquet":
        yield from _parquet_rows(path)
        return
    try:
        data = path.read_bytes()
    except OSError as err:
        raise LoadError(f"cannot read {path}: {err.strerror}") from None
    if data.lstrip()[:1] == b"[":
        yield from _array_rows(path, data)
    else:
        yield from _jsonl_rows(path, data)


def _jsonl_rows(path: Path, data: bytes) -> Iterator[Row]:
    for lineno, line in enumerate(data.split(b"\n"), 1):
        where = f"{path}:{lineno}"
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            yield where, line.decode("utf-8", "replace"), RowError(f"not UTF-8: {err.reason}")
            continue
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as err:
            yield where, text, RowError(f"malformed JSON: {err.msg}")
            continue
        yield _object_row(where, text, row)


def _array_rows(path: Path, data: bytes) -> Iterator[Row]:
    """A JSON array file (ProcessBench); ``source`` is file:N with N the 1-based element number."""
    try:
        rows = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LoadError(f"{path} is not a valid UTF-8 JSON array: {err}") from None
    for i, row in enumerate(rows, 1):
        yield _object_row(f"{path}:{i}", json.dumps(row, ensure_ascii=False), row)


def _parquet_rows(path: Path) -> Iterator[Row]:
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as err:  # pyarrow raises several types for corrupt files
        raise LoadError(f"cannot read Parquet {path}: {type(err).__name__}") from None
    for i, row in enumerate(rows, 1):
        yield f"{path}:{i}", json.dumps(row, ensure_ascii=False, default=str), row


def _object_row(where: str, raw: str, row: object) -> Row:
    if isinstance(row, dict):
        return where, raw, row
    return where, raw, RowError(f"row is a JSON {type(row).__name__}, not an object")


def _detect(path: str | Path, rows: list[Row]) -> str:
    """The first format whose keys the first object row has."""
    first = next((row for _, _, row in rows if isinstance(row, dict)), None)
    if first is None:
        raise LoadError(f"{path}: no JSON object rows ({len(rows)} unusable rows)")
    keys = first.keys()
    for name, fmt in FORMATS.items():
        if fmt.keys <= keys:
            return name
    raise LoadError(f"{path}: unknown format, first row has keys {sorted(keys)[:8]}")


def _reject(where: str, raw: str, reason: str) -> dict:
    return {"stage": "load", "source": where, "row": raw[:MAX_REJECT_ROW_CHARS], "reason": reason}


# ---------------------------------------------------------------- row formats


def _text(row: dict, key: str) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise RowError(f"missing or non-string {key!r}")
    value = value.strip()
    if not value:
        raise RowError(f"empty {key!r}")
    if len(value) > MAX_QUESTION_CHARS:
        raise RowError(f"{key!r} too long ({len(value)} chars > {MAX_QUESTION_CHARS})")
    return value


def _rest(row: dict, used: tuple[str, ...]) -> dict:
    return {k: v for k, v in row.items() if k not in used}


def _gsm8k(row: dict) -> Problem:
    question, answer = _text(row, "question"), _text(row, "answer")
    solution, mark, gold = answer.rpartition(GSM8K_MARK)
    gold = gold.strip().replace(",", "")
    if not mark or not _NUMBER_RE.fullmatch(gold):
        raise RowError(f"answer has no '{GSM8K_MARK} <number>' gold answer")
    return Problem.make(question, gold, "gsm8k",
                        {"solution": solution.strip(), **_rest(row, ("question", "answer"))})


def _math(row: dict) -> Problem:
    return Problem.make(_text(row, "problem"), _text(row, "answer"), "math", _rest(row, ("problem", "answer")))


def _processbench(row: dict) -> Problem:
    """A ProcessBench row is one (problem, solution) pair with no gold answer; the same problem appears
    with several generators' solutions, so the row id goes into ``source`` to keep problem ids distinct."""
    question, steps, label = _text(row, "problem"), row.get("steps"), row.get("label")
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) for s in steps):
        raise RowError("'steps' must be a non-empty list of strings")
    if isinstance(label, bool) or not isinstance(label, int) or not -1 <= label < len(steps):
        raise RowError(f"'label' must be -1 or a step index below {len(steps)}")
    row_id = row.get("id")
    if not isinstance(row_id, str) or not row_id:
        raise RowError("missing or non-string 'id'")
    return Problem.make(question, "", f"processbench:{row_id}", _rest(row, ("problem",)))


def _open(row: dict) -> Problem:
    """An open prompt: a question without a gold answer, labeled by self-consistency (the majority answer of
    its sampled solutions, ``search.labeling.base.with_pseudo_gold``). A row with an answer is refused, so a
    GSM8K file whose first row lacks one cannot drop every other row's gold."""
    if "answer" in row:
        raise RowError("has an 'answer': not an open prompt (the file's first row has none)")
    return Problem.make(_text(row, "question"), "", "open", _rest(row, ("question",)))


FORMATS: dict[str, RowFormat] = {  # detection tries these in order: most specific first
    "processbench": RowFormat(frozenset({"problem", "steps", "label"}), _processbench),
    "math": RowFormat(frozenset({"problem", "answer"}), _math),
    "gsm8k": RowFormat(frozenset({"question", "answer"}), _gsm8k),
    "open": RowFormat(frozenset({"question"}), _open),
}


def attach_gold(problems: list[Problem], gold_paths: Iterable[str | Path]) -> tuple[list[Problem], list[dict]]:
    """Fill missing gold answers (ProcessBench rows have none) from GSM8K/MATH files, matching question text.

    A problem still without a gold answer cannot be judged by rollouts, so it becomes a reject.
    """
    known: dict[str, str] = {}
    for path in gold_paths:
        for p in load_problems(path)[0]:
            known.setdefault(_normalize(p.question), p.gold_answer)
    kept, rejects = [], []
    for p in problems:
        gold = p.gold_answer or known.get(_normalize(p.question), "")
        if not gold:
            rejects.append(_reject(p.source, p.question[:MAX_REJECT_ROW_CHARS], "no gold answer for this question"))
            continue
        kept.append(p if gold == p.gold_answer else Problem(p.problem_id, p.question, gold, p.source, p.meta))
    return kept, rejects


def _normalize(question: str) -> str:
    return " ".join(question.split())
