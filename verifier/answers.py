"""Outcome verifier: pull the final answer out of a solution and decide whether it equals the gold answer.

Called for every rollout, so two things matter more than elegance: it never raises (model output is
arbitrary text: huge, unbalanced, half-LaTeX) and the common case is cheap. Plain numbers are compared
with exact rationals and never reach sympy; everything else goes to math-verify under a wall-clock limit
that also works off the main thread (math-verify's own limit uses ``signal.alarm``, which only works in
the main thread, so inside Ray actors or thread pools it would raise or hang).

>>> judge("So she has 3 + 4 = 7 apples. The answer is 7.", "7").correct
True
>>> answers_match("\\\\frac{3}{4}", "0.75")
True
"""

from __future__ import annotations

import ctypes
import logging
import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

logger = logging.getLogger(__name__)
# math-verify warns once per process that its own signal timeouts are off; we enforce time limits ourselves
logging.getLogger("math_verify").setLevel(logging.ERROR)

MAX_TEXT_CHARS = 100_000  # only the tail of longer texts is searched: final answers sit at the end
MAX_ANSWER_CHARS = 1_000  # longer "answers" are not sent to math-verify (parse cost grows fast)
MAX_NUMBER_CHARS = 200  # longer digit strings skip the numeric fast path (int() limit is 4300 digits)
MAX_BOXED_TRIES = 20  # unbalanced \boxed occurrences inspected before giving up on boxed extraction
MATH_VERIFY_TIMEOUT_S = 5.0  # wall clock for one parse+verify call
GOLD_PARSE_TIMEOUT_S = 30.0  # one gold answer at load time: generous, so a busy machine never rejects a good one
MAX_STUCK_WORKERS = 4  # abandoned math-verify threads tolerated before math-verify is skipped entirely
REL_TOL = Fraction(1, 10**6)  # numeric tolerance relative to max(1, |gold|)

# Inputs that make sympy evaluate astronomically large numbers (a stuck thread cannot be interrupted while
# it is inside a C big-int operation, so these are refused before math-verify sees them).
_EXPLOSIVE = re.compile(r"\^\s*\{[^{}]*\^|\^\s*\{?\s*\d{4,}|\*\*\s*\d{4,}|\d{4,}\s*!|\\binom\s*\{\d{5,}")


@dataclass(frozen=True)
class Verdict:
    """Outcome of judging one solution text against a gold answer."""

    answer: str | None  # extracted final answer, None if nothing was found
    gold: str
    correct: bool
    method: str  # which extractor found the answer ("boxed", "answer_is", "gsm8k", "last_number", "none")
    error: str | None = None  # why judging failed, if it did (correct is then False)


# ---------------------------------------------------------------- extraction


def _balanced_group(text: str, start: int) -> tuple[str, int] | None:
    """The content of the brace group opening at ``text[start]`` and the index after it, or None."""
    depth = 0
    for i in range(start, len(text)):
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
    return None


_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")


def _boxed(text: str) -> str | None:
    """The last ``\\boxed{...}`` with balanced braces (``\\boxed 5`` without braces is accepted too)."""
    starts = [m.end() for m in _BOXED.finditer(text)][-MAX_BOXED_TRIES:]
    for pos in reversed(starts):
        if pos < len(text) and text[pos] == "{":
            group = _balanced_group(text, pos)
            if group is not None:
                return group[0].strip()
        else:
            bare = re.match(r"[^\s$\\]+", text[pos:])
            if bare:
                return bare.group(0)
    return None


_ANSWER_IS = re.compile(r"(?:final answer|the answer)\s*(?:is|:)\s*:?\s*", re.IGNORECASE)
_GSM8K = re.compile(r"####\s*")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?")
_SENTENCE_END = re.compile(r"\.(?:\s|$)")  # a period not followed by a digit (3.5 stays whole)
_WRAPPERS = re.compile(r"^(?:\$+|\\\(|\\\[)|(?:\$+|\\\)|\\\])$")


def _clean_phrase(phrase: str) -> str | None:
    """Trim the sentence after "the answer is": cut at a sentence end, drop math delimiters and punctuation."""
    phrase = _SENTENCE_END.split(phrase, maxsplit=1)[0]
    phrase = phrase.strip().rstrip(".,;!").strip()
    for _ in range(2):
        phrase = _WRAPPERS.sub("", phrase).strip()
    return phrase or None


def _after_last(anchor: re.Pattern[str], text: str) -> str | None:
    """The rest of the line after the last match of ``anchor`` (anchors may repeat on one line)."""
    last = deque(anchor.finditer(text), maxlen=1)
    return text[last[0].end() :].split("\n", 1)[0] if last else None


def _answer_is(text: str) -> str | None:
    phrase = _after_last(_ANSWER_IS, text)
    return _clean_phrase(phrase) if phrase else None


def _gsm8k(text: str) -> str | None:
    phrase = _after_last(_GSM8K, text)
    if phrase is None:
        return None
    return phrase.strip().rstrip(".") or None


def _last_number(text: str) -> str | None:
    found = _NUMBER.findall(text)
    return found[-1].rstrip(",") if found else None


# Priority order: the first extractor that finds something wins.
EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "boxed": _boxed,
    "answer_is": _answer_is,
    "gsm8k": _gsm8k,
    "last_number": _last_number,
}


def extract_with_method(text: str) -> tuple[str | None, str]:
    """The final answer and the name of the extractor that found it (``"none"`` if none did)."""
    tail = text[-MAX_TEXT_CHARS:]
    for name, extractor in EXTRACTORS.items():
        answer = extractor(tail)
        if answer:
            return answer, name
    return None, "none"


def extract_answer(text: str) -> str | None:
    """The final answer of a solution: last ``\\boxed{}``, "the answer is X", ``#### X``, else the last number."""
    try:
        return extract_with_method(text)[0]
    except Exception:  # noqa: BLE001 - never raise on model output
        logger.debug("extraction failed", exc_info=True)
        return None


# ---------------------------------------------------------------- gold answers


def _gold_gsm8k(field: str) -> str:
    return field.rsplit("####", 1)[-1].strip().replace(",", "")


def _gold_math(field: str) -> str:
    return _boxed(field) or field.strip()


GOLD_FORMATS: dict[str, Callable[[str], str]] = {
    "gsm8k": _gold_gsm8k,  # "...reasoning... #### 1,072" -> "1072"
    "math": _gold_math,  # a MATH solution with \boxed{...}, or an already-bare answer
    "plain": str.strip,
}


def parse_gold(answer_field: str, fmt: str) -> str:
    """The bare gold answer from a dataset's answer field; ``fmt`` is a key of ``GOLD_FORMATS``."""
    if fmt not in GOLD_FORMATS:
        raise ValueError(f"unknown gold format {fmt!r}; known: {sorted(GOLD_FORMATS)}")
    return GOLD_FORMATS[fmt](answer_field)


# ---------------------------------------------------------------- numbers


_STRIP = re.compile(
    r"\\(?:text|mathrm|textbf|mbox)\s*\{[^{}]*\}|\\[,!;: ]|\\left|\\right|\\\$|\$|\\\(|\\\)|\\\[|\\\]"
    r"|\^\s*\{?\\circ\}?|°|\\displaystyle"
)
_NUM_BODY = r"(?:\d+(?:\.\d*)?|\.\d+)"
_PLAIN = re.compile(rf"([-+]?{_NUM_BODY})")
_SLASH = re.compile(rf"([-+]?{_NUM_BODY})\s*/\s*({_NUM_BODY})")
_LATEX_FRAC = re.compile(r"([-+]?)\\[dt]?frac\s*\{\s*(-?\d+)\s*\}\s*\{\s*(-?\d+)\s*\}")
_NUMBER_FORMS = (_LATEX_FRAC, _SLASH, _PLAIN)
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?:\D|$))|\{,\}")
_VAR_PREFIX = re.compile(r"^[A-Za-z]\s*=\s*")
_UNIT_SUFFIX = re.compile(r"\s*[A-Za-z][A-Za-z .]*$")
_MATH_WORDS = {"pi", "sqrt", "log", "ln", "sin", "cos", "tan", "exp", "e", "i", "x", "y", "n", "k"}


@dataclass(frozen=True)
class _Num:
    value: Fraction
    percent: bool


def _fraction(match: re.Match[str], form: re.Pattern[str]) -> Fraction:
    if form is _LATEX_FRAC:
        sign = -1 if match.group(1) == "-" else 1
        return sign * Fraction(int(match.group(2)), int(match.group(3)))
    if form is _SLASH:
        return Fraction(match.group(1)) / Fraction(match.group(2))
    return Fraction(match.group(1))


def to_number(text: str) -> _Num | None:
    """A plain number ("1,000", "$18", "18.0", "3/4", "\\frac{3}{4}", "50%", "12 apples") or None."""
    s = _STRIP.sub(" ", text.replace("\u2212", "-")).strip().rstrip(".").strip()
    s = _VAR_PREFIX.sub("", s)
    if len(s) > MAX_NUMBER_CHARS:
        return None
    percent = s.endswith("%")
    s = s.rstrip("%").rstrip("\\").strip()
    unit = _UNIT_SUFFIX.search(s)
    if unit and unit.start() > 0:
        words = unit.group(0).strip().lower()
        if words in _MATH_WORDS or len(words.replace(".", "")) < 2:
            return None
        s = s[: unit.start()]
        percent = percent or words in {"percent", "per cent"}
    s = _THOUSANDS.sub("", s).replace(" ", "")
    for form in _NUMBER_FORMS:
        match = form.fullmatch(s)
        if match:
            try:
                return _Num(_fraction(match, form), percent)
            except (ValueError, ZeroDivisionError):
                return None
    return None


def _close(a: Fraction, b: Fraction) -> bool:
    return abs(a - b) <= REL_TOL * max(1, abs(b))


def numbers_match(pred: _Num, gold: _Num) -> bool:
    """Equal within tolerance; a percent on either side may also be read as a fraction of 100."""
    candidates = [pred.value]
    if pred.percent or gold.percent:
        candidates += [pred.value / 100] if pred.percent else [pred.value * 100]
    return any(_close(c, gold.value) for c in candidates)


# ---------------------------------------------------------------- math-verify under a time limit


_stuck_workers: list[threading.Thread] = []


def _interrupt(thread: threading.Thread) -> None:
    """Raise TimeoutError inside ``thread`` at its next bytecode (works in any thread, unlike SIGALRM)."""
    if thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(TimeoutError))


def _math_verify(pred: str, gold: str) -> bool:
    from math_verify import grader, parser  # imported lazily: it pulls in sympy (~1 s)

    # Its timeouts are off on purpose (this module enforces its own, thread-safe one); say so once, not per call.
    parser.TIMEOUT_WARNING_SHOWN = grader.TIMEOUT_WARNING_SHOWN = True
    parse, verify = parser.parse, grader.verify

    gold_parsed = parse(f"${gold}$", parsing_timeout=None)
    pred_parsed = parse(f"${pred}$", parsing_timeout=None)
    if not gold_parsed or not pred_parsed:
        raise ValueError("math-verify could not parse the answer")
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def _math_verify_parses(gold: str) -> bool:
    """Whether math-verify turns ``gold`` into a sympy expression (it returns only the raw string otherwise)."""
    from math_verify import parser

    parser.TIMEOUT_WARNING_SHOWN = True
    return len(parser.parse(f"${gold}$", parsing_timeout=None)) > 1


def math_verify_match(pred: str, gold: str, timeout_s: float | None = None) -> bool:
    """math-verify's equivalence in a worker thread with a wall-clock limit; raises on timeout or failure.

    ``timeout_s`` defaults to ``MATH_VERIFY_TIMEOUT_S``.
    """
    if len(pred) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
        raise ValueError("answer too long for symbolic comparison")
    if _EXPLOSIVE.search(pred) or _EXPLOSIVE.search(gold):
        raise ValueError("answer has huge exponents or factorials")
    return _limited(lambda: _math_verify(pred, gold), timeout_s)


def gold_error(gold: str, timeout_s: float = GOLD_PARSE_TIMEOUT_S) -> str | None:
    """Why ``gold`` cannot serve as a gold answer, or None when it can; never raises.

    A gold answer is usable when the numeric fast path reads it or math-verify parses it into an expression
    within the limits ``judge`` applies; otherwise every solution of the problem would be judged wrong (a
    ``\\frac{`` or ``$$$$`` gold compares equal to nothing), so loaders reject the row with this reason.
    """
    gold = gold.strip()
    if not gold:
        return "empty gold answer"
    if to_number(gold) is not None:
        return None
    if len(gold) > MAX_ANSWER_CHARS:
        return f"gold answer too long to compare ({len(gold)} chars > {MAX_ANSWER_CHARS})"
    if _EXPLOSIVE.search(gold):
        return "gold answer has huge exponents or factorials"
    import math_verify  # noqa: F401 - imported here (~1 s of sympy), not inside the time limit

    try:
        parsed = _limited(lambda: _math_verify_parses(gold), timeout_s)
    except Exception as exc:  # noqa: BLE001 - math-verify on garbage may raise anything
        return f"math-verify cannot parse the gold answer: {type(exc).__name__}: {exc}"[:300]
    return None if parsed else "math-verify cannot parse the gold answer"


def _limited(work_fn: Callable[[], bool], timeout_s: float | None) -> bool:
    """``work_fn()`` in a daemon thread with a wall-clock limit (``MATH_VERIFY_TIMEOUT_S`` by default)."""
    timeout_s = MATH_VERIFY_TIMEOUT_S if timeout_s is None else timeout_s
    _stuck_workers[:] = [t for t in _stuck_workers if t.is_alive()]
    if len(_stuck_workers) >= MAX_STUCK_WORKERS:
        raise RuntimeError("math-verify disabled: too many stuck workers")
    box: dict[str, object] = {}

    def work() -> None:
        try:
            box["result"] = work_fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=work, name="math-verify", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        _interrupt(worker)
        worker.join(0.1)
        if worker.is_alive():
            _stuck_workers.append(worker)
        raise TimeoutError(f"math-verify exceeded {timeout_s:g} s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return bool(box["result"])


# ---------------------------------------------------------------- equivalence


def _match(pred: str, gold: str) -> tuple[bool, str | None]:
    """Equivalence plus the reason it could not be decided (None when it was)."""
    pred, gold = pred.strip(), gold.strip()
    if not pred or not gold:
        return False, "empty answer"
    p_num, g_num = to_number(pred), to_number(gold)
    if p_num is not None and g_num is not None:
        return numbers_match(p_num, g_num), None  # fast path: no sympy
    try:
        if math_verify_match(pred, gold):
            return True, None
        error = None
    except Exception as exc:  # noqa: BLE001 - math-verify on garbage may raise anything
        error = f"{type(exc).__name__}: {exc}"[:300]
    if pred == gold or pred.replace(" ", "") == gold.replace(" ", ""):
        return True, None
    return False, error


def answers_match(pred: str, gold: str) -> bool:
    """True if ``pred`` and ``gold`` denote the same answer (numeric fast path, then math-verify)."""
    try:
        return _match(pred, gold)[0]
    except Exception:  # noqa: BLE001 - never raise
        logger.debug("answers_match failed", exc_info=True)
        return False


def judge(text: str, gold: str) -> Verdict:
    """Extract the final answer of ``text`` and compare it with ``gold``; never raises."""
    try:
        answer, method = extract_with_method(text)
        if answer is None:
            return Verdict(None, gold, False, method, "no answer found")
        correct, error = _match(answer, gold)
        return Verdict(answer, gold, correct, method, error)
    except Exception as exc:  # noqa: BLE001 - never raise on model output
        return Verdict(None, str(gold), False, "none", f"{type(exc).__name__}: {exc}"[:300])
