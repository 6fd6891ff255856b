"""Arithmetic-claim checker: hand-made cases for LaTeX, units, chains, rounding, and algebra it must skip."""

from __future__ import annotations

from fractions import Fraction

import pytest

from verifier.arith_claims import check_solution, check_step, first_error_by_claims

# (step text, expected [(claim as str, ok)])
CASES = [
    ("So 3 + 4 = 7 apples.", [("3 + 4 = 7", True)]),
    ("So 3 + 4 = 8 apples.", [("3 + 4 = 8", False)]),
    ("2 × 3 pounds = 6 pounds", [("2 * 3 = 6", True)]),
    ("2 x 3 = 7", [("2*3 = 7", False)]),
    (r"\(1/3 \times 18 = 6\) flamingos", [("1/3 * 18 = 6", True)]),
    (r"$\frac{3}{4} \cdot 8 = 6$", [("((3)/(4)) * 8 = 6", True)]),
    (r"$\dfrac{10}{4} = 2.5$", [("((10)/(4)) = 2.5", True)]),
    (r"$12 \div 4 = 4$", [("12 / 4 = 4", False)]),
    ("20% of 50 = 10", [("20% *  50 = 10", True)]),
    ("0.25 * 100 = 25%", [("0.25 * 100 = 25%", True)]),
    ("$1,200 + $300 = $1,500 in total", [("1200 +  300 = 1500", True)]),
    ("$4 / 2 = $3", [("4 / 2 = 3", False)]),
    ("5 + 5 = 10 = 11", [("5 + 5 = 10", True)]),
    ("3 + 4 = 7, 7 * 2 = 15", [("3 + 4 = 7", True), ("7 * 2 = 15", False)]),
    ("Natalia sold 48/2 = <<48/2=24>>24 clips", [("48/2 = 24", True)]),
    ("She made <<5*3=16>>16 cups", [("5*3 = 16", False)]),
    ("-5 + 3 = -2", [("-5 + 3 = -2", True)]),
    ("2^5 = 32", [("2^5 = 32", True)]),
    ("2(3 + 4) = 14", [("2(3 + 4) = 14", True)]),
    ("10/3 = 3.33", [("10/3 = 3.33", True)]),  # rounded to the shown decimals
    ("2/3 = 0.67", [("2/3 = 0.67", True)]),
    ("2/3 = 0.66", [("2/3 = 0.66", True)]),  # truncated
    ("10/3 = 3.34", [("10/3 = 3.34", False)]),
    ("7 / 2 = 3", [("7 / 2 = 3", False)]),  # whole numbers must be exact
    ("10/3 ≈ 3", [("10/3 = 3", True)]),
    ("x^2 = (2.8284)^2 = 8", [("(2.8284)^2 = 8", True)]),  # a rounded input
    (r"\(2 \text{ books} \times 2 \text{ pounds/book} = 4 \text{ pounds}\)", [("2   books  * 2 = 4", True)]),
    # algebra, scales and integer division are not arithmetic claims
    ("2x + 3 = 7", []),
    ("3S + 9 = 27", []),
    (r"\sqrt{16} + 9 = 13", []),
    (r"\log_2 2^5 = 5", []),
    ("10 - 4 = 1.5*6 = 1.5x", []),
    ("1/2 inch = 20 miles", []),
    ("2023 / 4 = 505 remainder 3", []),
    ("2250 / 360 = 6 full rotations", [("2250 / 360 = 6", True)]),  # whole quotient in context
    ("New position: 1st - 5 = 6th", []),
    ("BD = 31/2 and AC = 22", []),
    (r"\frac{90}{123} < k < \frac{180}{123} \approx 0.732 < k", []),
    ("no numbers here", []),
    ("", []),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_check_step_cases(text: str, expected: list[tuple[str, bool]]) -> None:
    check = check_step(text)
    got = [(" ".join(str(c).split()), c.ok) for c in check.claims]
    assert got == [(" ".join(e.split()), ok) for e, ok in expected]
    assert check.found == len(expected)
    assert len(check.wrong) == sum(not ok for _, ok in expected)


def test_wrong_claim_carries_the_exact_value() -> None:
    claim = check_step("So 3 + 4 = 8.").wrong[0]
    assert (claim.expr, claim.claimed, claim.actual, claim.ok) == ("3 + 4", "8", Fraction(7), False)


def test_first_error_by_claims() -> None:
    steps = ["We have 2 * 3 = 6 eggs.", "Then 6 + 1 = 7.", "So 7 * 2 = 15.", "Finally 15 - 1 = 13."]
    assert first_error_by_claims(steps) == 2
    assert first_error_by_claims(steps[:2]) == -1
    assert [c.has_error for c in check_solution(steps)] == [False, False, True, True]


@pytest.mark.parametrize(
    "text",
    ["(" * 5000 + "1" + ")" * 5000 + " = 1", "9" * 5000 + " * 9 = 1", "2^99999 = 1", "1/0 = 1", "1 + " * 3000 + "1 = 2",
     "\\frac{" * 500 + "1", "\\frac{" * 2000 + "1" + "}{2}" * 2000 + " + 1 = 2", "(((10^64)^64)^64)^64 = 1",
     "= = = + - * /", "\udcff\x00"],
)
def test_garbage_never_raises(text: str) -> None:
    check_step(text)
