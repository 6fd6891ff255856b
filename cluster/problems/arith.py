"""The ``arith`` world: seeded integer word problems whose text parses back into the exact spec.

The sim engine reads a question back out of its prompt with ``parse_question`` and writes steps in this
grammar; ``loaders.iter_arith`` wraps the plain records of ``to_record`` as ``Problem`` objects; ``first_error``
is the exact ground truth of any solution, its steps cut by the one splitter (``steps.step_texts``).

A problem is a start value and 1-12 operations, one sentence each, e.g. "Mia has 48 marbles. She gives half
of them to her brother. Then she buys 7 more. How many marbles does Mia have now?". A worked solution has one
step per operation ("She gives half of 48 to her brother: 48 / 2 = 24.") and a final "The answer is 31."
step, so ``first_error`` can compare every written result with the true chain of values exactly.

Example::

    >>> spec = generate(1, seed=0, mix={2: 1.0})[0]
    >>> parse_question(spec.question) == spec
    True
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from cluster.problems.steps import DEFAULT_DELIMITER, step_texts

MAX_STEPS = 12  # the labeling benchmark needs solutions of up to 12 operations
DEFAULT_MIX: dict[int, float] = {1: 0.2, 2: 0.25, 3: 0.2, 4: 0.15, 5: 0.1, 6: 0.1}  # P(number of ops)
START_RANGE = (6, 60)  # start value; small so a 135M model sometimes solves 1-2 step problems
ADD_RANGE = (2, 20)  # operand of + and -
MUL_MAX_RESULT = 240  # keep products small: x2..x5 only while the result stays below this
DIVISORS = (2, 3, 4, 5)

NAMES = (("Mia", "She"), ("Liam", "He"), ("Ava", "She"), ("Noah", "He"), ("Zoe", "She"), ("Omar", "He"),
         ("Lena", "She"), ("Ravi", "He"))
OBJECTS = ("marbles", "stickers", "apples", "coins", "books", "shells", "pencils", "cards")
RELATIVES = ("brother", "sister", "friend", "cousin")
CONNECTORS = ("", "Then ", "After that, ", "Next, ")  # sentence openers after the first operation

OPS: dict[str, Callable[[int, int], int]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a // b,  # floor: a policy that divides a wrong, indivisible value still writes an int
}
_POSSESSIVE = {"She": "her", "He": "his"}


@dataclass(frozen=True)
class Template:
    """One way to phrase an operation: a question sentence and the matching solution-step clause."""

    op: str
    fixed: int  # the operand a word implies ("half" = 2, "doubles" = 2); 0 = a number written as {k}
    sentence: str  # fields: {P} pronoun, {poss} her/his, {who} relative, {obj} objects, {k} operand
    step: str  # same fields plus {a}, the value the step starts from


TEMPLATES: tuple[Template, ...] = (
    Template("+", 0, "{P} buys {k} more.", "{P} buys {k} more"),
    Template("+", 0, "{P} finds {k} more {obj}.", "{P} finds {k} more {obj}"),
    Template("+", 0, "{Poss} {who} gives {o} {k} more.", "{Poss} {who} gives {o} {k} more"),
    Template("-", 0, "{P} gives {k} of them to {poss} {who}.", "{P} gives {k} of {a} to {poss} {who}"),
    Template("-", 0, "{P} loses {k} of them.", "{P} loses {k} of {a}"),
    Template("-", 0, "{P} sells {k} of them.", "{P} sells {k} of {a}"),
    Template("*", 2, "{P} doubles {poss} {obj}.", "{P} doubles {a}"),
    Template("*", 3, "{P} triples {poss} {obj}.", "{P} triples {a}"),
    Template("*", 0, "{P} ends up with {k} times as many {obj}.", "{P} now has {k} times {a}"),
    Template("/", 2, "{P} gives half of them to {poss} {who}.", "{P} gives half of {a} to {poss} {who}"),
    Template("/", 3, "{P} keeps one third of them.", "{P} keeps one third of {a}"),
    Template("/", 0, "{P} splits them equally into {k} boxes and keeps one box.",
             "{P} splits {a} into {k} equal boxes"),
)


@dataclass(frozen=True)
class ArithStep:
    op: str  # one of OPS
    operand: int
    template: int  # index into TEMPLATES
    connector: int  # index into CONNECTORS
    who: str  # the relative named by the sentence (unused by most templates, kept for exact round trips)


@dataclass(frozen=True)
class ArithSpec:
    name: str
    pronoun: str  # "She" or "He"
    obj: str
    start: int
    steps: tuple[ArithStep, ...]

    @property
    def chain(self) -> list[int]:
        """True values: the start, then the value after each operation; ``chain[-1]`` is the answer."""
        values = [self.start]
        for s in self.steps:
            values.append(OPS[s.op](values[-1], s.operand))
        return values

    @property
    def answer(self) -> int:
        return self.chain[-1]

    @property
    def question(self) -> str:
        parts = [f"{self.name} has {self.start} {self.obj}."]
        for s in self.steps:
            text = _fill(TEMPLATES[s.template].sentence, self, s)
            parts.append(CONNECTORS[s.connector] + (text[0].lower() + text[1:] if s.connector else text))
        parts.append(f"How many {self.obj} does {self.name} have now?")
        return " ".join(parts)

    def step_clause(self, index: int, value: int) -> str:
        """The words of solution step ``index`` before its equation, starting from ``value``."""
        s = self.steps[index]
        return _fill(TEMPLATES[s.template].step, self, s, a=value)

    def meta(self) -> dict:
        return {"chain": self.chain, "ops": [[s.op, s.operand] for s in self.steps], "n_ops": len(self.steps)}


def _fill(fmt: str, spec: ArithSpec, step: ArithStep, a: int = 0) -> str:
    poss = _POSSESSIVE[spec.pronoun]
    return fmt.format(P=spec.pronoun, Poss=poss.capitalize(), poss=poss, o=poss if poss == "her" else "him",
                      who=step.who, obj=spec.obj, k=step.operand, a=a)


def format_step(clause: str, a: int, op: str, b: int, c: int, link: str = ": ") -> str:
    """One solution step (without its delimiter): ``"She buys 7 more: 24 + 7 = 31."``."""
    return f"{clause}{link}{a} {op} {b} = {c}."


def format_answer(value: int) -> str:
    return f"The answer is {value}."


def to_record(spec: ArithSpec) -> dict:
    """Plain ``question``/``gold_answer``/``meta`` record for wrapping as a ``cluster.problems.problem.Problem``."""
    return {"question": spec.question, "gold_answer": str(spec.answer), "meta": spec.meta()}


# ---------------------------------------------------------------- generation


def generate(n: int, seed: int, mix: dict[int, float] | None = None, start: int = 0) -> list[ArithSpec]:
    """Problems ``start .. start + n - 1`` of the seeded set; problem ``i`` depends only on (seed, i, mix), so
    a prefix of a larger set is stable and a run can generate its problems a slice at a time.

    ``mix`` maps a number of operations (1..12) to a weight; weights are normalised.
    """
    weights = _check_mix(DEFAULT_MIX if mix is None else mix)
    counts, probs = list(weights), list(weights.values())
    out = []
    for i in range(start, start + n):
        rng = random.Random(f"arith:{seed}:{i}")
        out.append(_one(rng, rng.choices(counts, probs)[0]))
    return out


def _check_mix(mix: dict[int, float]) -> dict[int, float]:
    clean = {int(k): float(v) for k, v in mix.items()}
    if not clean or any(not 1 <= k <= MAX_STEPS for k in clean) or any(v < 0 for v in clean.values()) \
            or sum(clean.values()) <= 0:
        raise ValueError(f"mix maps operation counts 1..{MAX_STEPS} to non-negative weights with a positive sum")
    return clean


def _one(rng: random.Random, n_ops: int) -> ArithSpec:
    name, pronoun = rng.choice(NAMES)
    obj = rng.choice(OBJECTS)
    start = value = rng.randint(*START_RANGE)
    steps = []
    for i in range(n_ops):
        op, operand, template = _pick_op(rng, value)
        who = rng.choice(RELATIVES) if "{who}" in TEMPLATES[template].sentence else ""
        steps.append(ArithStep(op, operand, template, rng.randrange(1, len(CONNECTORS)) if i else 0, who))
        value = OPS[op](value, operand)
    return ArithSpec(name, pronoun, obj, start, tuple(steps))


def _pick_op(rng: random.Random, value: int) -> tuple[str, int, int]:
    """A feasible operation for ``value``: results stay positive, products small, divisions exact."""
    choices: list[tuple[str, int]] = [("+", rng.randint(*ADD_RANGE))]
    if value > ADD_RANGE[0]:
        choices.append(("-", rng.randint(1, min(ADD_RANGE[1], value - 1))))
    factors = [k for k in range(2, 6) if value * k <= MUL_MAX_RESULT]
    if factors:
        choices.append(("*", rng.choice(factors)))
    divisors = [d for d in DIVISORS if value % d == 0 and value // d >= 1]
    if divisors:
        choices.append(("/", rng.choice(divisors)))
    op, operand = rng.choice(choices)
    fitting = [i for i, t in enumerate(TEMPLATES) if t.op == op and t.fixed in (0, operand)]
    return op, operand, rng.choice(fitting)


# ---------------------------------------------------------------- parsing

_FIELD_RE = {
    "P": r"(?P<P>She|He)", "Poss": r"(?:Her|His)", "poss": r"(?:her|his)", "o": r"(?:her|him)",
    "who": r"(?P<who>" + "|".join(RELATIVES) + r")", "obj": r"\w+", "k": r"(?P<k>\d+)",
}


def _sentence_regex(fmt: str) -> re.Pattern[str]:
    pieces = re.split(r"\{(\w+)\}", fmt)
    out = []
    for i, piece in enumerate(pieces):
        out.append(_FIELD_RE[piece] if i % 2 else re.escape(piece))  # odd pieces are field names
    return re.compile("".join(out) + r"\Z")


_SENTENCE_RES = tuple(_sentence_regex(t.sentence) for t in TEMPLATES)
_SPLIT_RE = re.compile(r"(?<=[.?])\s+")
_FIRST_RE = re.compile(r"(?P<name>[A-Z][a-z]+) has (?P<start>\d+) (?P<obj>\w+)\.\Z")
_LAST_RE = re.compile(r"How many (?P<obj>\w+) does (?P<name>[A-Z][a-z]+) have now\?\Z")
_PRONOUN = dict(NAMES)


def parse_question(question: str) -> ArithSpec | None:
    """The exact spec behind an arith question, or None for any other text (never raises)."""
    sentences = _SPLIT_RE.split(question.strip())
    if len(sentences) < 3:
        return None
    first, last = _FIRST_RE.match(sentences[0]), _LAST_RE.match(sentences[-1])
    if not first or not last or first["name"] != last["name"] or first["obj"] != last["obj"]:
        return None
    name, obj = first["name"], first["obj"]
    pronoun = _PRONOUN.get(name)
    if pronoun is None:
        return None
    steps = []
    for i, sentence in enumerate(sentences[1:-1]):
        step = _parse_sentence(sentence, i, pronoun, obj)
        if step is None:
            return None
        steps.append(step)
    spec = ArithSpec(name, pronoun, obj, int(first["start"]), tuple(steps))
    return spec if spec.question == question.strip() else None  # rejects near-misses (wrong pronoun, ...)


def _parse_sentence(sentence: str, index: int, pronoun: str, obj: str) -> ArithStep | None:
    connector = 0
    if index:
        connector = next((c for c in range(1, len(CONNECTORS)) if sentence.startswith(CONNECTORS[c])), -1)
        if connector < 0:
            return None
        sentence = sentence[len(CONNECTORS[connector]):]
        sentence = sentence[:1].upper() + sentence[1:]
    for t, regex in enumerate(_SENTENCE_RES):
        m = regex.match(sentence)
        if m:
            groups = m.groupdict()
            operand = TEMPLATES[t].fixed or int(groups["k"])
            return ArithStep(TEMPLATES[t].op, operand, t, connector, groups.get("who") or "")
    return None


# ---------------------------------------------------------------- solutions and ground truth

_EQUATION_RE = re.compile(r"(-?\d+) ([-+*/]) (-?\d+) = (-?\d+)\.\s*\Z")
_ANSWER_RE = re.compile(r"The answer is (-?\d+)\.\s*\Z")


def parse_step(step: str) -> tuple[int, str, int, int] | int | None:
    """``(a, op, b, c)`` for an operation step, the value for an answer step, None for anything else."""
    m = _EQUATION_RE.search(step)
    if m:
        return int(m[1]), m[2], int(m[3]), int(m[4])
    m = _ANSWER_RE.search(step)
    return int(m[1]) if m else None


def arithmetic_ok(a: int, op: str, b: int, c: int) -> bool:
    """Whether ``a op b = c`` holds exactly (division must leave no remainder)."""
    if op == "/":
        return b != 0 and a == b * c
    return OPS[op](a, b) == c


def first_error(question: str, solution_text: str, delimiter: str = DEFAULT_DELIMITER) -> int:
    """0-based index of the first wrong step of a solution to an arith question; -1 if no step is wrong.

    A step is wrong when its result differs from the true chain value, its arithmetic does not hold, it
    cannot be read, or it comes after the answer; the answer step is wrong when it states a wrong value.
    A solution cut short with only right steps gives -1 (its steps are right; its outcome is not).
    Raises ValueError when ``question`` is not an arith question.

    >>> q = "Mia has 4 marbles. She buys 3 more. How many marbles does Mia have now?"
    >>> first_error(q, "She buys 3 more: 4 + 3 = 7.\\n\\nThe answer is 7."), first_error(q, "x: 4 + 3 = 8.")
    (-1, 0)
    """
    spec = parse_question(question)
    if spec is None:
        raise ValueError("not an arith question")
    chain, n_ops = spec.chain, len(spec.steps)
    for i, step in enumerate(step_texts(solution_text, delimiter)):
        parsed = parse_step(step)
        if i < n_ops:
            if not isinstance(parsed, tuple) or parsed[3] != chain[i + 1] or not arithmetic_ok(*parsed):
                return i
        elif i > n_ops or parsed != chain[-1]:
            return i
    return -1
