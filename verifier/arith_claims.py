"""Arithmetic-claim checker: find "a op b = c" computations in step text and recompute them exactly.

A wrong computation is the cheapest process signal there is: no model, no rollouts, and when it fires it
names the claim and the right value (``search.traces.reflection`` turns that into feedback). The checker is tuned
for precision over recall: anything that might be algebra (a variable next to a number, a LaTeX command
before or after an operand) is skipped rather than guessed at, and a claimed decimal that is the exact
value rounded or truncated to the shown digits counts as right.

Text goes through three stages: ``normalize`` (LaTeX and typography to plain ``+ - * / ^ = ≈``), a tokenizer
plus a small state machine that cuts runs of ``operand (op operand)* (= ...)*`` into equality chains (unit
words after a number are allowed: "2 * 3 pounds = 6 pounds"), and a recursive-descent evaluator over
``fractions.Fraction`` (no ``eval``).

>>> check_step("So 3 + 4 = 8 apples.").wrong[0].actual
Fraction(7, 1)
>>> first_error_by_claims(["2 * 3 = 6", "6 + 1 = 8"])
1
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import pairwise

MAX_STEP_CHARS = 20_000  # longer steps are checked on their first MAX_STEP_CHARS characters
MAX_SEGMENT_TOKENS = 200  # longer expressions are skipped, not evaluated
MAX_DEPTH = 30  # parenthesis nesting the evaluator accepts
MAX_EXPONENT = 64  # |n| in a ^ n; bigger powers are skipped (cost, and rarely arithmetic)
MAX_RESULT_BITS = 100_000  # powers with bigger results are skipped (nested powers would explode)
MAX_UNIT_WORDS = 2  # words after a number read as its unit ("pounds", "per hour")
APPROX_REL_TOL = Fraction(1, 100)  # tolerance of "≈" / "approximately" claims
ROUNDED_INPUT_PLACES = 3  # an operand with this many decimals or more is taken as already rounded (2.8284)

# ---------------------------------------------------------------- normalization

_FRAC = re.compile(r"\\[dt]?frac\s*")
_REWRITES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), repl)
    for pattern, repl in (
        (r"<<|>>", "\n"),  # GSM8K calculator annotations <<a*b=c>> become their own line
        (r"\\[dt]?frac\s*(\d)(\d)", r"((\1)/(\2))"),  # \frac12
        (r"\\(?:text|mathrm|textbf|mbox|operatorname)\s*\{([^{}]*)\}", r" \1 "),
        (r"\\(?:boxed|left|right|displaystyle|big|Big)(?![A-Za-z])", ""),
        (r"(?<=\d)(?:\\[,!;:]|\{,\})(?=\d{3})", ""),  # 1\,000 and 1{,}000
        (r"(?<=\d),(?=\d{3}(?!\d))", ""),  # 1,000
        (r"\\[,!;: ]|\\q?quad(?![A-Za-z])", " "),
        (r"\\(?:cdots|ldots|dots)(?![A-Za-z])|\.\.\.|…", " … "),
        (r"\\(?:times|cdot|ast)(?![A-Za-z])|[×·⋅∙]", "*"),
        (r"\\div(?![A-Za-z])|÷", "/"),
        (r"\\approx(?![A-Za-z])|\\simeq(?![A-Za-z])|≈|\bapproximately\b|\babout\b", " ≈ "),
        (r"[−–]", "-"),
        (r"\\%", "%"),
        (r"\^\s*\{?\s*\\circ\s*\}?|°", " "),
        (r"\\\$|\$|\\\(|\\\)|\\\[|\\\]", " "),
        (r"(?<=\d)\s*[xX]\s*(?=\(?\d)", "*"),  # 3 x 4
        (r"(?<=\d)\s+times\s+(?=\d)", " * "),
        (r"(?<=%)\s*of\b", " * "),  # 20% of 50
    )
)


def _expand_fracs(text: str, depth: int = 0) -> str:
    """``\\frac{A}{B}`` -> ``((A)/(B))`` with balanced braces (nesting beyond MAX_DEPTH is left as is)."""
    if depth > MAX_DEPTH:
        return text
    out: list[str] = []
    pos = 0
    for _ in range(len(text)):
        match = _FRAC.search(text, pos)
        if match is None:
            break
        groups = []
        cursor = match.end()
        for _part in range(2):
            if cursor >= len(text) or text[cursor] != "{":
                break
            end = _group_end(text, cursor)
            if end is None:
                break
            groups.append(_expand_fracs(text[cursor + 1 : end], depth + 1))
            cursor = end + 1
        out.append(text[pos : match.start()])
        out.append(f"(({groups[0]})/({groups[1]}))" if len(groups) == 2 else text[match.start() : match.end()])
        pos = cursor if len(groups) == 2 else match.end()
    out.append(text[pos:])
    return "".join(out)


def _group_end(text: str, start: int) -> int | None:
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return i
    return None


def normalize(text: str) -> str:
    """LaTeX and typographic arithmetic rewritten to plain ``+ - * / ^ ( ) = ≈ %`` text."""
    text = _expand_fracs(text[:MAX_STEP_CHARS])
    text = text.replace("**", "^")
    for pattern, repl in _REWRITES:
        text = pattern.sub(repl, text)
    return text.replace("{", "(").replace("}", ")")


# ---------------------------------------------------------------- tokens and chains

_TOKEN = re.compile(
    r"(?P<num>\d+(?:\.\d+)?(?:\s*%)?)|(?P<op>[-+*/^])|(?P<lp>\()|(?P<rp>\))|(?P<eq>=|≈)"
    r"|(?P<word>[A-Za-z]+)|(?P<space>[ \t]+)|(?P<other>.|\n)"
)
_MATH_WORDS = frozenset({"sqrt", "log", "ln", "sin", "cos", "tan", "exp", "pi", "mod", "choose"})
# words after a number that end the arithmetic run without being its unit
_STOP_WORDS = frozenset({"and", "or", "so", "then", "is", "are", "was", "which", "that", "to", "of", "for", "in",
                         "with", "from", "but", "we", "it", "the", "this", "each", "when", "if", "since", "as"})
# words after a number that change what it means (505 remainder 3, 1st, 6th): the claim is not a plain value
_NOT_UNITS = frozenset({"remainder", "rem", "quotient", "st", "nd", "rd", "th", "times"})
# unit abbreviations that may be written glued to the number (10cm); any other glued word is a variable
# (single letters are excluded: 3h, 19g, 7M are variables far more often than units)
_GLUED_UNITS = frozenset({"cm", "mm", "km", "kg", "mg", "lb", "lbs", "oz", "ft", "mi", "hr", "hrs", "min", "mins",
                          "sec", "ml", "mph", "kmh", "am", "pm"})
# integer division is written as "a / b = q" when the text talks about quotients or whole units
_INT_DIV_CONTEXT = re.compile(r"remain|quotient|floor|ceil|whole|full|complete|round|divisible|at most|maximum"
                              r"|integer|\\lfloor|\\lceil", re.IGNORECASE)
_REJECT_BEFORE = frozenset("\\_^'|!]<>≤≥")  # characters that glue a neighbouring number to something else
_SEPARATING_COMMANDS = frozenset({"implies", "Rightarrow", "rightarrow", "Longrightarrow", "therefore", "quad",
                                  "qquad", "text", "end", "newline", "hline", "hspace", "\\"})


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    start: int
    end: int


@dataclass
class Segment:
    """One side of an equality: arithmetic tokens (units dropped) and its span in the normalized text."""

    tokens: list[Token] = field(default_factory=list)
    start: int = -1
    end: int = -1
    valid: bool = True
    approx: bool = False  # written with "≈" before it or "…" after it
    units: list[str] = field(default_factory=list)  # unit words after the last operand ("pounds")

    @property
    def has_operator(self) -> bool:
        prev = None
        for tok in self.tokens:
            if tok.kind == "op" and prev is not None and prev.kind in ("num", "rp"):
                return True
            prev = tok
        return False

    @property
    def is_number(self) -> bool:
        return [t.kind for t in self.tokens] in (["num"], ["op", "num"])

    def add(self, tok: Token) -> None:
        if self.start < 0:
            self.start = tok.start
        self.tokens.append(tok)
        self.end = tok.end


def tokenize(text: str) -> list[Token]:
    return [Token(m.lastgroup or "other", m.group(0), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def _significant(tokens: list[Token], i: int, step: int) -> int | None:
    """Index of the nearest non-space token from ``i`` in direction ``step``."""
    while 0 <= i < len(tokens):
        if tokens[i].kind != "space":
            return i
        i += step
    return None


def _is_command(tokens: list[Token], j: int) -> bool:
    return tokens[j].kind == "word" and j > 0 and tokens[j - 1].text == "\\"


def _attaches(tokens: list[Token], j: int | None, *, glued: bool) -> bool:
    """Does token ``j`` bind to a neighbouring number (a variable, a function, a LaTeX command)?"""
    if j is None:
        return False
    tok = tokens[j]
    if tok.text == "\\":  # a LaTeX command follows: only separators (\\implies, \\quad, \\\\) are harmless
        nxt = tokens[j + 1] if j + 1 < len(tokens) else None
        return nxt is not None and nxt.kind == "word" and nxt.text not in _SEPARATING_COMMANDS
    if tok.kind == "word":
        return glued or len(tok.text) == 1 or tok.text in _MATH_WORDS or _is_command(tokens, j)
    if tok.kind == "other" and tok.text == "." and glued:  # 0.\overline{3}: a repeating decimal
        return j + 1 < len(tokens) and tokens[j + 1].text == "\\"
    if tok.kind == "other":
        return tok.text in _REJECT_BEFORE
    return glued and tok.kind in ("num", "rp", "lp")


def _word_after(tokens: list[Token], i: int) -> int:
    """Index of the word right after token ``i`` (spaces skipped), or 0 if the next token is not a word."""
    j = _significant(tokens, i + 1, 1)
    return j if j is not None and tokens[j].kind == "word" and tokens[j].text.islower() else 0


def _is_unit(tokens: list[Token], i: int) -> bool:
    """Is word ``i`` (right after an operand) a unit like "pounds" rather than a variable like "AC" or "xy"?"""
    word = tokens[i].text
    if tokens[i - 1].kind == "rp" or word in _NOT_UNITS or _is_command(tokens, i):
        return False
    if tokens[i - 1].kind != "space":
        return word in _GLUED_UNITS
    return word.islower() and len(word) > 1 and word not in _MATH_WORDS


def _starts_clean(tokens: list[Token], i: int) -> bool:
    """A run may start at ``i`` only if nothing algebraic (variable, operator, command) leads into it."""
    if i > 0 and _attaches(tokens, i - 1, glued=tokens[i - 1].kind != "space"):
        return False
    prev = _significant(tokens, i - 1, -1)
    if prev is not None and tokens[prev].kind in ("op", "rp", "num"):
        return False
    return not _attaches(tokens, prev, glued=False)


def _ends_clean(tokens: list[Token], last: int, ended_on_unit: bool) -> bool:
    """The last operand must not continue into a variable or a LaTeX command (6x, 2\\sqrt 3)."""
    if ended_on_unit:
        return True
    if last + 1 < len(tokens) and _attaches(tokens, last + 1, glued=True):
        return False
    return not _attaches(tokens, _significant(tokens, last + 1, 1), glued=False)


def _scan_run(tokens: list[Token], i: int) -> tuple[list[Segment], int]:
    """Consume one run starting at ``i``; returns its segments and the index after it."""
    segments = [Segment()]
    expect_operand, depth, units, last = True, 0, 0, i
    while i < len(tokens):
        tok, seg = tokens[i], segments[-1]
        kind = tok.kind
        if kind == "space":
            i += 1
            continue
        if expect_operand:
            if kind == "num":
                seg.add(tok)
                expect_operand, units = False, 0
            elif kind == "op" and tok.text in "+-":
                seg.add(tok)
            elif kind == "lp":
                seg.add(tok)
                depth += 1
            else:
                break
        elif kind == "word" and tok.text in _STOP_WORDS:
            break
        elif kind == "word" and _is_unit(tokens, i):
            if units == MAX_UNIT_WORDS:
                break
            units += 1  # a unit after the operand ("pounds", "per hour"); not part of the expression
            seg.units.append(tok.text.lower().rstrip("s"))
        elif kind == "word":
            seg.valid = False  # a variable or command next to a number: algebra, not arithmetic
            break
        elif units and kind in ("num", "lp"):
            break
        elif units and tok.text == "/" and _word_after(tokens, i):
            i = _word_after(tokens, i)  # "pounds/book": a compound unit, not a division
        elif units and tok.text == "^":
            seg.valid = False  # cm^2 after a number: the power belongs to the unit
            break
        elif kind == "op":
            seg.add(tok)
            seg.units.clear()
            expect_operand, units = True, 0
        elif kind == "rp" and depth > 0:
            seg.add(tok)
            depth -= 1
        elif kind == "lp" and tokens[i - 1].kind in ("rp", "num"):
            seg.add(Token("op", "*", tok.start, tok.start))  # (a)(b), 2(3+4): implicit product
            seg.add(tok)
            depth, expect_operand = depth + 1, True
        elif kind == "eq":
            segments.append(Segment(approx=tok.text == "≈"))
            expect_operand, depth = True, 0
        else:
            seg.approx = seg.approx or tok.text == "…"
            break
        last = i
        i += 1
    if expect_operand or depth or not _ends_clean(tokens, last, units > 0):
        segments[-1].valid = False
    return [s for s in segments if s.tokens], i


def find_chains(text: str) -> list[list[Segment]]:
    """Equality chains ``e0 = e1 = ...`` in normalized text; a chain's first segment may be invalid."""
    tokens = tokenize(text)
    chains: list[list[Segment]] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        startable = tok.kind in ("num", "lp") or (
            tok.text == "-" and i + 1 < len(tokens) and tokens[i + 1].kind in ("num", "lp")
        )
        if not startable:
            i += 1
            continue
        clean = _starts_clean(tokens, i)
        segments, after = _scan_run(tokens, i)
        if segments and not clean:
            segments[0].valid = False
        if len(segments) > 1:
            chains.append(segments)
        i = max(after, i + 1)
    return chains


# ---------------------------------------------------------------- exact evaluation


class EvalError(ValueError):
    """The expression is not plain arithmetic we can evaluate exactly."""


def _num_value(text: str) -> Fraction:
    body = text.rstrip("% \t")
    value = Fraction(body)
    return value / 100 if text.rstrip().endswith("%") else value


class _Parser:
    """expr := term (('+'|'-') term)* ; term := unary (('*'|'/') unary)* ; unary := ('-'|'+') unary | power ;
    power := atom ('^' unary)? ; atom := NUM | '(' expr ')'."""

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens, self.i, self.depth = tokens, 0, 0

    def peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> Token:
        tok = self.peek()
        if tok is None:
            raise EvalError("unexpected end")
        self.i += 1
        return tok

    def parse(self) -> Fraction:
        value = self.expr()
        if self.peek() is not None:
            raise EvalError(f"unexpected {self.peek()}")
        return value

    def expr(self) -> Fraction:
        value = self.term()
        while (tok := self.peek()) is not None and tok.text in ("+", "-"):
            self.take()
            value = value + self.term() if tok.text == "+" else value - self.term()
        return value

    def term(self) -> Fraction:
        value = self.unary()
        while (tok := self.peek()) is not None and tok.text in ("*", "/"):
            self.take()
            rhs = self.unary()
            if tok.text == "/" and rhs == 0:
                raise EvalError("division by zero")
            value = value * rhs if tok.text == "*" else value / rhs
        return value

    def unary(self) -> Fraction:
        tok = self.peek()
        if tok is not None and tok.kind == "op" and tok.text in ("+", "-"):
            self.take()
            return -self.unary() if tok.text == "-" else self.unary()
        return self.power()

    def power(self) -> Fraction:
        base = self.atom()
        tok = self.peek()
        if tok is None or tok.text != "^":
            return base
        self.take()
        exponent = self.unary()
        if exponent.denominator != 1 or abs(exponent) > MAX_EXPONENT or (base == 0 and exponent < 0):
            raise EvalError("exponent out of range")
        size = max(base.numerator.bit_length(), base.denominator.bit_length())
        if size * abs(exponent) > MAX_RESULT_BITS:
            raise EvalError("power too large")
        return base ** int(exponent)

    def atom(self) -> Fraction:
        tok = self.take()
        if tok.kind == "num":
            return _num_value(tok.text)
        if tok.kind == "lp":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise EvalError("nested too deeply")
            value = self.expr()
            if self.take().kind != "rp":
                raise EvalError("unbalanced parentheses")
            self.depth -= 1
            return value
        raise EvalError(f"unexpected {tok.text!r}")


def evaluate(tokens: list[Token]) -> Fraction:
    """The exact value of an arithmetic token list; raises ``EvalError`` if it is not plain arithmetic."""
    if len(tokens) > MAX_SEGMENT_TOKENS:
        raise EvalError("expression too long")
    return _Parser(tokens).parse()


# ---------------------------------------------------------------- claims


@dataclass(frozen=True)
class Claim:
    """One checked computation: ``expr`` evaluates to ``actual``; the text claimed ``claimed``."""

    expr: str  # the computation as written (after LaTeX normalization)
    claimed: str  # the stated result as written
    actual: Fraction  # the exact value of expr
    ok: bool

    def __str__(self) -> str:
        return f"{self.expr} = {self.claimed}"


@dataclass(frozen=True)
class StepCheck:
    """All claims found in one step."""

    claims: tuple[Claim, ...] = ()

    @property
    def found(self) -> int:
        return len(self.claims)

    @property
    def wrong(self) -> list[Claim]:
        return [c for c in self.claims if not c.ok]

    @property
    def has_error(self) -> bool:
        return any(not c.ok for c in self.claims)


def _decimals(text: str) -> int:
    digits = text.rstrip("% \t").split(".")
    return len(digits[1]) if len(digits) == 2 else 0


def _rel_close(actual: Fraction, value: Fraction) -> bool:
    return abs(actual - value) <= APPROX_REL_TOL * abs(actual)


def _rounds_to(actual: Fraction, value: Fraction, unit: Fraction, places: int, approx: bool) -> bool:
    """``value`` is ``actual`` rounded or truncated to ``places`` decimals (``unit`` = one last place)."""
    if actual == value or (approx and _rel_close(actual, value)):
        return True
    if places == 0 and not approx:
        return False  # a whole-number claim must be exact unless marked approximate
    if abs(actual - value) * 2 <= unit:
        return True
    same_sign = value == 0 or (value > 0) == (actual > 0)
    return places > 0 and same_sign and 0 <= abs(actual) - abs(value) < unit


def _is_integer_division(left: Segment, actual: Fraction, claimed: Fraction) -> bool:
    """``a / b = q`` where q is a or b's whole quotient (floor or ceiling), as in "2250 / 360 = 6 rotations"."""
    divides = any(t.text == "/" for t in left.tokens)
    whole = claimed.denominator == 1 and actual.denominator != 1
    return divides and whole and claimed in (actual.numerator // actual.denominator,
                                             -(-actual.numerator // actual.denominator))


def _rounded_inputs_ok(left: Segment, actual: Fraction, claimed: Fraction) -> bool:
    """``(2.8284)^2 = 8``: operands shown to p >= 3 decimals carry rounding; allow relative 10^-(p-1)."""
    places = max((_decimals(t.text) for t in left.tokens if t.kind == "num"), default=0)
    if places < ROUNDED_INPUT_PLACES or actual == 0:
        return False
    return abs(actual - claimed) <= Fraction(1, 10 ** (places - 1)) * abs(actual)


def _claim_ok(actual: Fraction, right: Segment, claimed: Fraction, *, approx: bool) -> bool:
    """Exact, or the exact value rounded or truncated to the shown decimals of the claimed number."""
    if actual == claimed:
        return True
    shown = right.tokens[-1].text
    places = _decimals(shown)
    unit = Fraction(1, 10**places)
    readings = [(claimed, unit)]
    if shown.rstrip().endswith("%"):  # 25% reads as 0.25, but "0.25 * 100 = 25%" means the number 25
        readings = [(claimed, unit / 100), (claimed * 100, unit)]
    return any(_rounds_to(actual, value, u, places, approx) for value, u in readings)


def _span(text: str, seg: Segment) -> str:
    return text[seg.start : seg.end].strip()


def claims_in_chain(text: str, chain: list[Segment], *, int_division: bool = False) -> list[Claim]:
    """Each ``left = number`` pair whose left side computes something and both sides evaluate.

    A right side that is itself an expression is skipped: in model text that is far more often an equation
    being tested or solved ("10 - 4 = 1.5x") than a claim. Different units on the two sides ("1/2 inch =
    20 miles") make a scale, not a computation. ``int_division`` accepts whole quotients of divisions.
    """
    values: list[Fraction | None] = []
    for seg in chain:
        try:
            values.append(evaluate(seg.tokens) if seg.valid else None)
        except (EvalError, ValueError, ZeroDivisionError, OverflowError):
            values.append(None)
    claims = []
    for (left, lv), (right, rv) in pairwise(zip(chain, values, strict=True)):
        if lv is None or rv is None or not left.has_operator or not right.is_number:
            continue
        if left.units and right.units and left.units[0] != right.units[0]:
            continue
        ok = _claim_ok(lv, right, rv, approx=right.approx) or _rounded_inputs_ok(left, lv, rv)
        ok = ok or (int_division and _is_integer_division(left, lv, rv))
        claims.append(Claim(_span(text, left), _span(text, right), lv, ok))
    return claims


def check_step(text: str) -> StepCheck:
    """Find and check every arithmetic claim in one step's text."""
    norm = normalize(text)
    int_division = bool(_INT_DIV_CONTEXT.search(norm))
    return StepCheck(tuple(claim for chain in find_chains(norm)
                           for claim in claims_in_chain(norm, chain, int_division=int_division)))


def check_solution(steps: Sequence[str]) -> list[StepCheck]:
    """``check_step`` for every step of a solution, in order."""
    return [check_step(step) for step in steps]


def first_error_by_claims(steps: Sequence[str]) -> int:
    """Index of the first step with a wrong arithmetic claim, or -1 if no claim is wrong."""
    for index, step in enumerate(steps):
        if check_step(step).has_error:
            return index
    return -1
