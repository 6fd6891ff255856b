"""The sim's code steps: how the synthetic policy writes a step as a python call, and the exact truth of one.

A code step computes its operation in a fenced block, stops at the closing fence (a tool-running driver
appends the output; see ``search/tools.py`` for the format), then states the result::

    She buys 7 more:
    ```python
    total = 24
    print(total + 7)
    ```
    ```output
    31
    ```
    So 24 + 7 = 31.

The policy slips in three ways, each with its own rate: a logic error goes into the code (a wrong operation
or operand, which runs and prints a wrong value that the step then states: only rollouts can tell), a crash
(``print(totl + 7)``: NameError; the step then states its mental arithmetic), and a misstatement (the step
states a value other than the one printed). ``first_error`` is the exact truth: a step is wrong when
``cluster.problems.arith.first_error`` says so (wrong value or arithmetic) or when its code does not compute what it
states (it crashes, or prints another number), evaluated from the code's text by the sim's own grammar, never
by running it.
"""

from __future__ import annotations

import random
import re

from cluster.problems import arith
from cluster.problems.steps import DEFAULT_DELIMITER, step_texts

CODE_OPEN, FENCE, OUTPUT_OPEN = "```python\n", "```", "```output\n"  # the same text as search/tools.py
PY_OPS = {"+": "+", "-": "-", "*": "*", "/": "//"}  # the sim's "/" is floor division (arith.OPS)
VAR, TYPO = "total", "totl"  # a crash reads the misspelt name
SLIPS = (-10, -2, -1, 1, 2, 10)
_CODE_RE = re.compile(r"```python\ntotal = (-?\d+)\nprint\((\w+) (\+|-|\*|//) (-?\d+)\)\n```")
_OUTPUT_RE = re.compile(r"```output\n(.*?)```\n\Z", re.S)
_FROM_PY = {v: k for k, v in PY_OPS.items()}


def code_block(a: int, op: str, b: int, crash: bool) -> str:
    return f"{CODE_OPEN}{VAR} = {a}\nprint({TYPO if crash else VAR} {PY_OPS[op]} {b})\n{FENCE}\n"


def statement(a: int, op: str, b: int, c: int) -> str:
    return f"So {a} {op} {b} = {c}."


def parse_code(step: str) -> tuple[int, str, int, bool] | None:
    """``(a, op, b, crashes)`` of the sim's code block in ``step``; None if it has none in the sim's grammar."""
    m = _CODE_RE.search(step)
    if m is None:
        return None
    return int(m[1]), _FROM_PY[m[3]], int(m[4]), m[2] != VAR


def awaits_statement(partial: str) -> bool:
    """Whether a step in progress ends right after an output block (a driver ran its code)."""
    return _OUTPUT_RE.search(partial) is not None and parse_code(partial) is not None


def state(partial: str, true_next: int, off_track: bool, rates: tuple[float, float, float],
          rng: random.Random) -> tuple[str, int]:
    """The statement that finishes a code step after its output, and the value it states.

    ``rates`` = (recovery, misstatement, arithmetic slip after a crash); ``true_next`` is the chain value
    the step should reach, ``off_track`` whether the step started from a wrong value.
    """
    recovery, misstate, slip = rates
    parsed = parse_code(partial)
    assert parsed is not None  # awaits_statement checked it
    a, op, b, _ = parsed
    printed = _OUTPUT_RE.search(partial)[1].strip()  # type: ignore[index]
    if re.fullmatch(r"-?\d+", printed):
        c = int(printed)
        if off_track and rng.random() < recovery:
            c = true_next  # a compensating slip back onto the true value, against the output
        elif rng.random() < misstate:
            c += rng.choice(SLIPS)
    else:  # the code failed: state the mental arithmetic
        c = arith.OPS[op](a, b) + (rng.choice(SLIPS) if rng.random() < slip else 0)
    return statement(a, op, b, c), c


def supported(step: str) -> bool:
    """A step without code, or one whose code runs and prints exactly the value the step states."""
    if CODE_OPEN not in step:
        return True
    parsed, claim = parse_code(step), arith.parse_step(step)
    if parsed is None or not isinstance(claim, tuple):
        return False
    a, op, b, crashes = parsed
    return not crashes and claim[3] == arith.OPS[op](a, b)


def first_error(question: str, solution_text: str, delimiter: str = DEFAULT_DELIMITER) -> int:
    """0-based index of the first wrong step (``arith.first_error``, plus code that does not back its claim)."""
    errors = [arith.first_error(question, solution_text, delimiter)]
    errors += [i for i, step in enumerate(step_texts(solution_text, delimiter)) if not supported(step)][:1]
    found = [e for e in errors if e >= 0]
    return min(found) if found else -1
