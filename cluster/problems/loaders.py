"""Problem loaders: GSM8K / MATH / ProcessBench rows from JSONL, JSON-array or Parquet files, and ``arith``.

Bad rows never stop a load: each becomes a reject (``stage``, ``source`` = "file:line", ``row`` = raw text,
``reason``) and the rest loads, so nothing is dropped silently. A row is checked whole before it becomes a
``Problem`` (``check_row``: every string valid UTF-8, nesting at most ``MAX_DEPTH``, numbers finite, JSON
numbers Python can read), and its gold answer must be one the verifier can compare (``gold_check``, which the
caller passes: ``verifier.answers.gold_error``; problems sit below the verifier in the import graph, so they
cannot import it), so nothing downstream (hashing, templating, Parquet, judging) can choke on it.

The format is detected per file from the rows that match one (most rows win), so a first row with unexpected
keys rejects only that row. Keys a format does not use never reject a row: they are kept in the problem's
``meta``. Only a problem with the file as a whole (missing, unreadable, no row in any known format, or a
forced ``fmt`` that no row matches) raises ``LoadError``, which the CLI turns into exit code 2.

Per-row steps are small functions (``parse_line``, ``check_row``, ``parse_row``) so a streaming loader can
apply them one row at a time.

Example::

    >>> from verifier.answers import gold_error  # doctest: +SKIP
    >>> problems, rejects = load_problems("../shared/data/gsm8k/test.jsonl", gold_check=gold_error)  # doctest: +SKIP
    >>> problems[0].gold_answer, problems[0].source  # doctest: +SKIP
    ('18', 'gsm8k')
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from cluster.problems import arith
from cluster.problems.problem import Problem
from storage.rejects import printable, reject_row

MAX_QUESTION_CHARS = 64_000  # longer questions are almost surely broken rows, and blow up prompts
MAX_ROW_CHARS = 1_000_000  # a whole row (JSON text); real dataset rows are a few KB
MAX_DEPTH = 32  # nesting of a row's values; real rows nest 2-3 deep, deep ones break recursive code later
GSM8K_MARK = "####"  # GSM8K answers end "#### <number>"
UTF8_BOM = b"\xef\xbb\xbf"
DETECT_ROWS = 1000  # rows read to decide a file's format (most rows win) before the stream starts
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")

GoldCheck = Callable[[str], "str | None"]  # why a gold answer cannot be compared, or None (verifier.answers.gold_error)


class LoadError(ValueError):
    """The file as a whole can't be loaded (missing, unreadable, unknown format); the message is one line."""


class RowError(ValueError):
    """One row can't be used; the message is the reject reason."""


@dataclass(frozen=True)
class RowFormat:
    """A file format recognised by the keys of its rows, and how one row becomes a Problem."""

    keys: frozenset[str]  # a row with all of these keys has this format
    parse: Callable[[dict, GoldCheck], Problem]
    id_key: str | None = None  # a key whose value must be unique within the load (ProcessBench's "id")


def load_problems(paths: str | Path | Iterable[str | Path], fmt: str | None = None, *,
                  gold_check: GoldCheck) -> tuple[list[Problem], list[dict]]:
    """Problems from one or more files, deduplicated by ``problem_id`` (first wins), plus the rejects.

    ``fmt`` forces a format name from ``FORMATS`` (``LoadError`` if no row of a file has its keys); by
    default each file's format is the one most of its first ``DETECT_ROWS`` object rows match.
    ``iter_problems`` is the same, one item at a time.
    """
    problems: list[Problem] = []
    rejects: list[dict] = []
    for item in iter_problems(paths, fmt, gold_check=gold_check):
        (problems if isinstance(item, Problem) else rejects).append(item)
    return problems, rejects


def iter_problems(paths: str | Path | Iterable[str | Path], fmt: str | None = None, *,
                  gold_check: GoldCheck) -> Iterator[Problem | dict]:
    """The problems and rejects of ``paths`` in file order, read lazily: a run streams them into shards.

    Every file is opened and its format decided (from its first ``DETECT_ROWS`` rows) before this returns, so
    a missing file, unknown format or a forced format no row matches raises ``LoadError`` at once (before a
    run writes anything); rows are then read as they are consumed. A repeated ``problem_id`` is a reject with
    reason ``duplicate`` (the first is kept).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if fmt is not None and fmt not in FORMATS:
        raise LoadError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    files = []
    for path in paths:
        head = list(itertools.islice(_read_rows(Path(path)), DETECT_ROWS))
        files.append((Path(path), _forced(path, head, fmt) if fmt else _detect(path, head)))
    return _unique(_parsed_rows(files, gold_check))


def _parsed_rows(files: list[tuple[Path, str]], gold_check: GoldCheck) -> Iterator[tuple[str, str, Problem | dict]]:
    """Each row of each (file, format) as a Problem, or as its reject; ProcessBench-style ``id`` keys unique."""
    seen_ids: set[tuple[str, object]] = set()
    for path, name in files:
        key = FORMATS[name].id_key
        for where, raw, row in _read_rows(path):
            try:
                problem = parse_row(row, name, gold_check)
                if key is not None:
                    if (name, row[key]) in seen_ids:
                        raise RowError(f"duplicate {key} {row[key]!r}")
                    seen_ids.add((name, row[key]))
            except RowError as err:
                yield where, raw, _reject(where, raw, str(err))
                continue
            yield where, raw, problem


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


def parse_row(row: dict | RowError, fmt: str, gold_check: GoldCheck) -> Problem:
    """One read row as a Problem of format ``fmt``; ``RowError`` (the reject reason) if it can't be one."""
    if isinstance(row, RowError):
        raise row
    check_row(row)
    return FORMATS[fmt].parse(row, gold_check)


def load_arith(n: int, seed: int, mix: dict[int, float] | None = None) -> list[Problem]:
    """``n`` generated arith problems (``cluster.problems.arith``); meta holds the true chain and the operations."""
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

    JSONL is read line by line and Parquet a record batch at a time; a JSON array is parsed whole (element by
    element). Opening the file happens on the first ``next``.
    """
    if not path.is_file():
        raise LoadError(f"no such file: {path}")
    if path.suffix == ".parquet":
        yield from _parquet_rows(path)
        return
    try:
        with path.open("rb") as f:
            head = f.read(64).removeprefix(UTF8_BOM)  # editors on Windows write one; it is not part of a row
            if head.lstrip()[:1] == b"[":
                yield from _array_rows(path, head + f.read())
            else:
                f.seek(0)
                yield from _jsonl_rows(path, f)
    except OSError as err:
        raise LoadError(f"cannot read {path}: {err.strerror}") from None


def _jsonl_rows(path: Path, lines: Iterable[bytes]) -> Iterator[Row]:
    for lineno, line in enumerate(lines, 1):
        line = line.rstrip(b"\n")
        if lineno == 1:
            line = line.removeprefix(UTF8_BOM)
        where = f"{path}:{lineno}"
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            yield where, line.decode("utf-8", "replace"), RowError(f"not UTF-8: {err.reason}")
            continue
        if not text.strip():
            continue
        yield where, text, parse_line(text)


def parse_line(text: str) -> dict | RowError:
    """One JSON text as an object, or the reason it isn't one (never raises)."""
    if len(text) > MAX_ROW_CHARS:
        return RowError(f"row too long ({len(text)} chars > {MAX_ROW_CHARS})")
    try:
        return _object(_DECODER.decode(text))
    except (ValueError, RecursionError) as err:
        return _json_error(err)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)  # NaN / Infinity are not JSON: reject, don't store


def _json_error(err: Exception) -> RowError:
    if isinstance(err, json.JSONDecodeError):
        return RowError(f"malformed JSON: {err.msg}")
    if isinstance(err, RecursionError):
        return RowError("malformed JSON: nested too deeply to parse")
    return RowError(f"malformed JSON: {str(err).split(';')[0]}")  # int digit limit, NaN/Infinity


_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def _object(row: object) -> dict | RowError:
    if isinstance(row, dict):
        return row
    return RowError(f"row is a JSON {_JSON_TYPES.get(type(row), type(row).__name__)}, not an object")


_ARRAY_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{},]')


def _array_rows(path: Path, data: bytes) -> Iterator[Row]:
    """A JSON array file (ProcessBench), element by element: ``source`` is file:N (N the element number).

    Each element is decoded on its own, so one malformed, too deep or truncated element is one reject.
    Undecodable bytes become lone surrogates (``surrogateescape``), which ``check_row`` rejects per row.
    """
    text = data.decode("utf-8", "surrogateescape")
    pos, n = _skip_ws(text, text.index("[") + 1), 0
    while pos < len(text) and text[pos] != "]":
        n += 1
        try:
            value, end = _DECODER.raw_decode(text, pos)
            row = _object(value)
        except (ValueError, RecursionError) as err:
            end, row = _element_end(text, pos), _json_error(err)
        raw = text[pos:end]
        if len(raw) > MAX_ROW_CHARS and not isinstance(row, RowError):
            row = RowError(f"row too long ({len(raw)} chars > {MAX_ROW_CHARS})")
        yield f"{path}:{n}", raw, row
        pos = _skip_ws(text, end)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
        elif pos < len(text) and text[pos] != "]":  # garbage after an element: skip to the next separator
            pos = _element_end(text, pos + 1)
            pos = _skip_ws(text, pos + 1) if pos < len(text) and text[pos] == "," else pos


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _element_end(text: str, pos: int) -> int:
    """Where the array element starting at ``pos`` ends: the next ``,`` or ``]`` outside strings and brackets."""
    depth = 0
    for token in _ARRAY_TOKEN.finditer(text, pos):
        t = token.group()
        if t in "[{":
            depth += 1
        elif depth > 0 and t in "]}":
            depth -= 1
        elif t == "]":
            return token.start()
        elif t == "," and depth == 0:
            return token.start()
    return len(text)


def _parquet_rows(path: Path) -> Iterator[Row]:
    """Rows of a Parquet file, one record batch in memory at a time."""
    try:
        batches = pq.ParquetFile(path).iter_batches()
        i = 0
        for batch in batches:
            for row in batch.to_pylist():
                i += 1
                yield f"{path}:{i}", json.dumps(row, default=str), row
    except Exception as err:  # pyarrow raises several types for corrupt files
        raise LoadError(f"cannot read Parquet {path}: {type(err).__name__}") from None


def _detect(path: str | Path, rows: list[Row]) -> str:
    """The format most object rows match (ties: the earlier in ``FORMATS``); rows matching none are rejected."""
    votes = Counter(name for _, _, row in rows if isinstance(row, dict)
                    for name in [_format_of(row)] if name is not None)
    if votes:
        return max(FORMATS, key=lambda name: votes[name])
    first = next((row for _, _, row in rows if isinstance(row, dict)), None)
    if first is None:
        raise LoadError(f"{path}: no JSON object rows ({len(rows)} unusable rows)")
    raise LoadError(f"{path}: unknown format, no row has the keys of {', '.join(FORMATS)} "
                    f"(first row has keys {sorted(map(str, first))[:8]})")


def _format_of(row: dict) -> str | None:
    return next((name for name, fmt in FORMATS.items() if fmt.keys <= row.keys()), None)


def _forced(path: str | Path, rows: list[Row], fmt: str) -> str:
    """``fmt`` if at least one row has its keys: a format that matches nothing is a wrong flag, not bad rows."""
    if any(isinstance(row, dict) and FORMATS[fmt].keys <= row.keys() for _, _, row in rows):
        return fmt
    found = _detect(path, rows)  # names the format the file does have, or raises for an unknown one
    raise LoadError(f"{path}: format {fmt!r} matches no row (it needs keys {sorted(FORMATS[fmt].keys)}); "
                    f"the rows look like {found!r}")


def _reject(where: str, raw: str, reason: str) -> dict:
    return reject_row("load", where, raw, reason)


# ---------------------------------------------------------------- checking a row


def check_row(row: dict) -> None:
    """Raise ``RowError`` unless every value of ``row`` is safe downstream: strings valid UTF-8 (no lone
    surrogate, which fails at hashing or Parquet write), nesting at most ``MAX_DEPTH``, floats finite."""
    stack: list[tuple[str, object, int]] = [("", row, 0)]  # (top-level key, value, depth): no recursion
    while stack:
        where, value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise RowError(f"{where}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, str):
            _check_text(where, value)
        elif isinstance(value, float) and not math.isfinite(value):
            raise RowError(f"{where}: non-finite number {value}")
        elif isinstance(value, dict):
            for key, item in value.items():
                name = key if isinstance(key, str) else repr(key)
                _check_text(where or name, name)
                stack.append((where or name, item, depth + 1))
        elif isinstance(value, (list, tuple)):
            stack.extend((where, item, depth + 1) for item in value)


def _check_text(where: str, text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise RowError(f"{printable(where) or 'row'}: not valid UTF-8 ({printable(err.object[err.start:err.end])} "
                       f"at {err.start}: a lone surrogate or undecodable bytes)") from None


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


def _gold(row: dict, key: str, gold_check: GoldCheck) -> str:
    """A gold answer field: a string (or an integer, as some MATH exports store them) the verifier can read."""
    value = row.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
        row = {key: value}
    gold = _text(row, key)
    reason = gold_check(gold)
    if reason is not None:
        raise RowError(f"{key!r}: {reason}")
    return gold


def _problem(question: str, gold: str, source: str, meta: dict) -> Problem:
    """The Problem, after checking the one meta key the pipeline acts on: ``steps`` marks a given solution."""
    steps = meta.get("steps")
    if "steps" in meta and (not isinstance(steps, list) or not steps
                            or not all(isinstance(s, str) and s.strip() for s in steps)):
        raise RowError("'steps' must be a non-empty list of non-blank strings")
    return Problem.make(question, gold, source, meta)


def _rest(row: dict, used: tuple[str, ...]) -> dict:
    return {k: v for k, v in row.items() if k not in used}


def _gsm8k(row: dict, gold_check: GoldCheck) -> Problem:
    question, answer = _text(row, "question"), _text(row, "answer")
    solution, mark, gold = answer.rpartition(GSM8K_MARK)
    gold = gold.strip().replace(",", "")
    if not mark or not _NUMBER_RE.fullmatch(gold):
        raise RowError(f"answer has no '{GSM8K_MARK} <number>' gold answer")
    reason = gold_check(gold)
    if reason is not None:
        raise RowError(f"'answer': {reason}")
    return _problem(question, gold, "gsm8k", {"solution": solution.strip(), **_rest(row, ("question", "answer"))})


def _math(row: dict, gold_check: GoldCheck) -> Problem:
    return _problem(_text(row, "problem"), _gold(row, "answer", gold_check), "math", _rest(row, ("problem", "answer")))


def _processbench(row: dict, gold_check: GoldCheck) -> Problem:
    """A ProcessBench row is one (problem, solution) pair with no gold answer; the same problem appears
    with several generators' solutions, so the row id goes into ``source`` to keep problem ids distinct."""
    question, steps, label = _text(row, "problem"), row.get("steps"), row.get("label")
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) and s.strip() for s in steps):
        raise RowError("'steps' must be a non-empty list of non-blank strings")
    if isinstance(label, bool) or not isinstance(label, int) or not -1 <= label < len(steps):
        raise RowError(f"'label' must be -1 or a step index below {len(steps)}")
    row_id = row.get("id")
    if not isinstance(row_id, str) or not row_id.strip():
        raise RowError("missing or non-string 'id'")
    return _problem(question, "", f"processbench:{row_id}", _rest(row, ("problem",)))


def _open(row: dict, gold_check: GoldCheck) -> Problem:
    """An open prompt: a question without a gold answer, labeled against a pseudo-gold (``labeling.open_gold``:
    self-consistency, ``search.labeling.base.with_pseudo_gold``, or the LLM judge, ``search.labeling.judged_gold``).
    A row with an answer is refused, so a GSM8K file whose first row lacks one cannot drop every other row's gold."""
    if "answer" in row:
        raise RowError("has an 'answer': not an open prompt (the file's first row has none)")
    return Problem.make(_text(row, "question"), "", "open", _rest(row, ("question",)))


FORMATS: dict[str, RowFormat] = {  # detection tries these in order: most specific first
    "processbench": RowFormat(frozenset({"problem", "steps", "label"}), _processbench, id_key="id"),
    "math": RowFormat(frozenset({"problem", "answer"}), _math),
    "gsm8k": RowFormat(frozenset({"question", "answer"}), _gsm8k),
    "open": RowFormat(frozenset({"question"}), _open),
}


def attach_gold(items: Iterable[Problem | dict], gold_paths: Iterable[str | Path], *,
                gold_check: GoldCheck) -> Iterator[Problem | dict]:
    """Fill missing gold answers (ProcessBench rows have none) from GSM8K/MATH files, matching question text.

    The gold files are read when this is called (a bad one raises ``LoadError`` at once); ``items`` (problems
    and rejects, as ``iter_problems`` yields them) are mapped lazily. A problem still without a gold answer
    cannot be judged by rollouts, so it becomes a reject.
    """
    known: dict[str, str] = {}
    for path in gold_paths:
        for p in load_problems(path, gold_check=gold_check)[0]:
            known.setdefault(_normalize(p.question), p.gold_answer)

    def attached() -> Iterator[Problem | dict]:
        for p in items:
            if not isinstance(p, Problem):
                yield p
                continue
            gold = p.gold_answer or known.get(_normalize(p.question), "")
            if not gold:
                yield _reject(p.source, p.question, "no gold answer for this question")
            else:
                yield p if gold == p.gold_answer else Problem(p.problem_id, p.question, gold, p.source, p.meta)
    return attached()


def _normalize(question: str) -> str:
    return " ".join(question.split())
