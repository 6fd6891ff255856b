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
    of its first object row. ``iter_problems`` is the same, one item at a time.
    """
    problems: list[Problem] = []
    rejects: list[dict] = []
    for item in iter_problems(paths, fmt):
        (problems if isinstance(item, Problem) else rejects).append(item)
    return problems, rejects


def iter_problems(paths: str | Path | Iterable[str | Path], fmt: str | None = None) -> Iterator[Problem | dict]:
    """The problems and rejects of ``paths`` in file order, read lazily: a run streams them into shards.

    Every file is opened and its format detected before this returns, so a missing file or unknown format
    raises ``LoadError`` at once (before a run writes anything); rows are then read as they are consumed.
    A repeated ``problem_id`` is a reject with reason ``duplicate`` (the first is kept).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if fmt is not None and fmt not in FORMATS:
        raise LoadError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    files = [(Path(path), FORMATS[fmt or _detect(path, _read_rows(Path(path)))].parse) for path in paths]
    return _unique(_parsed_rows(files))


def _parsed_rows(files: list[tuple[Path, Callable[[dict], Problem]]]) -> Iterator[tuple[str, str, Problem | dict]]:
    for path, parse in files:
        for where, raw, row in _read_rows(path):
            try:
                if isinstance(row, RowError):
                    raise row
                yield where, raw, parse(row)
            except RowError as err:
                yield where, raw, _reject(where, raw, str(err))


def _unique(items: Iterable[tuple[str, str, Problem | dict]]) -> Iterator[Problem | dict]:
    """Drop repeated problem ids (as ``duplicate`` rejects). The seen-set keeps each 64-bit id as an int
    (about 70 bytes a problem), so a million-problem stream costs tens of MB, not its problems."""
    seen: set[int] = set()
    for where, raw, item in items:
        if isinstance(item, Problem):
            key = int(item.problem_id, 16)
            if key in seen:
                item = _reject(where, raw, "duplicate")
            else:
                seen.add(key)
        yield item


def load_arith(n: int, seed: int, mix: dict[int, float] | None = None) -> list[Problem]:
    """``n`` generated arith problems (``cluster.arith``); meta holds the true chain and the operations."""
    return [Problem.make(r["question"], r["gold_answer"], "arith", r["meta"])
            for r in map(arith.to_record, arith.generate(n, seed, mix))]


ARITH_CHUNK = 1024  # problems generated at a time by ``iter_arith``


def iter_arith(n: int, seed: int, mix: dict[int, float] | None = None) -> Iterator[Problem | dict]:
    """The same ``n`` problems as ``load_arith``, generated a chunk at a time; a repeated question (the
    generator can draw one twice) is a ``duplicate`` reject with source ``arith:<index>``."""
    def numbered() -> Iterator[tuple[str, str, Problem]]:
        for start in range(0, n, ARITH_CHUNK):
            specs = arith.generate(min(ARITH_CHUNK, n - start), seed, mix, start=start)
            for i, record in enumerate(map(arith.to_record, specs), start):
                yield f"arith:{i}", record["question"], Problem.make(record["question"], record["gold_answer"],
                                                                     "arith", record["meta"])
    return _unique(numbered())


# ---------------------------------------------------------------- reading files

Row = tuple[str, str, dict | RowError]  # (file:line, raw text, the object or why the row is unusable)


def _read_rows(path: Path) -> Iterator[Row]:
    """Every row of a file in order, read as consumed; a row that isn't a JSON object carries the reason instead.

    Opening the file (and, for a JSON array, parsing it) happens on the first ``next``.
    """
    if not path.is_file():
        raise LoadError(f"no such file: {path}")
    if path.suffix == ".parquet":
        yield from _parquet_rows(path)
        return
    try:
        with path.open("rb") as f:
            head = f.read(64)
            if head.lstrip()[:1] == b"[":
                data = head + f.read()
                yield from _array_rows(path, data)
            else:
                f.seek(0)
                yield from _jsonl_rows(path, f)
    except OSError as err:
        raise LoadError(f"cannot read {path}: {err.strerror}") from None


def _jsonl_rows(path: Path, lines: Iterable[bytes]) -> Iterator[Row]:
    for lineno, line in enumerate(lines, 1):
        line = line.rstrip(b"\n")
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
    """Rows of a Parquet file, one record batch in memory at a time."""
    try:
        batches = pq.ParquetFile(path).iter_batches()
        i = 0
        for batch in batches:
            for row in batch.to_pylist():
                i += 1
                yield f"{path}:{i}", json.dumps(row, ensure_ascii=False, default=str), row
    except Exception as err:  # pyarrow raises several types for corrupt files
        raise LoadError(f"cannot read Parquet {path}: {type(err).__name__}") from None


def _object_row(where: str, raw: str, row: object) -> Row:
    if isinstance(row, dict):
        return where, raw, row
    return where, raw, RowError(f"row is a JSON {type(row).__name__}, not an object")


def _detect(path: str | Path, rows: Iterator[Row]) -> str:
    """The first format whose keys the first object row has (rows are read up to that row only)."""
    unusable = 0
    for _, _, first in rows:
        if isinstance(first, dict):
            break
        unusable += 1
    else:
        raise LoadError(f"{path}: no JSON object rows ({unusable} unusable rows)")
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


FORMATS: dict[str, RowFormat] = {  # detection tries these in order: most specific first
    "processbench": RowFormat(frozenset({"problem", "steps", "label"}), _processbench),
    "math": RowFormat(frozenset({"problem", "answer"}), _math),
    "gsm8k": RowFormat(frozenset({"question", "answer"}), _gsm8k),
}


def attach_gold(items: Iterable[Problem | dict], gold_paths: Iterable[str | Path]) -> Iterator[Problem | dict]:
    """Fill missing gold answers (ProcessBench rows have none) from GSM8K/MATH files, matching question text.

    The gold files are read when this is called (a bad one raises ``LoadError`` at once); ``items`` (problems
    and rejects, as ``iter_problems`` yields them) are mapped lazily. A problem still without a gold answer
    cannot be judged by rollouts, so it becomes a reject.
    """
    known: dict[str, str] = {}
    for path in gold_paths:
        for p in load_problems(path)[0]:
            known.setdefault(_normalize(p.question), p.gold_answer)

    def attached() -> Iterator[Problem | dict]:
        for p in items:
            if not isinstance(p, Problem):
                yield p
                continue
            gold = p.gold_answer or known.get(_normalize(p.question), "")
            if not gold:
                yield _reject(p.source, p.question[:MAX_REJECT_ROW_CHARS], "no gold answer for this question")
            else:
                yield p if gold == p.gold_answer else Problem(p.problem_id, p.question, gold, p.source, p.meta)
    return attached()


def _normalize(question: str) -> str:
    return " ".join(question.split())
