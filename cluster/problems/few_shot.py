"""Worked examples per problem source: the few-shot turns put before a question, in the step format.

A worked example teaches the step format (one step per paragraph, ``sampling.delimiter`` between steps, a last
step "The answer is N.") and the register of its problems, so a question only gets examples of its own
family: arith examples in front of a GSM8K question would teach the wrong kind of problem.

- ``arith``: generated (``cluster.problems.arith``, a seed no problem set of the quickstart uses), one step
  per operation, exactly the format the sim and the ground truth read;
- ``gsm8k``: grade-school word problems, written for tracemill (not taken from GSM8K, so no test item leaks
  into a prompt);
- ``math``: short competition problems in LaTeX with a boxed answer, also written for tracemill; ProcessBench
  rows get ``gsm8k`` or ``math`` examples by their subset (``processbench:gsm8k-12`` is a GSM8K problem;
  MATH, OlympiadBench and Omni-MATH rows are competition math);
- open prompts and unknown sources get none: no worked example fits a question of an unknown domain.

``sampling.few_shot`` asks for that many examples; a family with fewer built in gives all it has.

Example::

    >>> few_shot_family(Problem.make("What is 2 + 2?", "4", "processbench:gsm8k-1"))
    'gsm8k'
    >>> [len(worked_examples(f, 2, "\\n\\n")) for f in FAMILIES]
    [2, 2, 2]
"""

from __future__ import annotations

from cluster.problems import arith
from cluster.problems.problem import Problem

FEW_SHOT_SEED = 10_007  # arith examples come from a seed no quickstart problem set uses
FAMILIES = ("arith", "gsm8k", "math")

# (question, steps) written for tracemill; the last step states the answer the verifier extracts
GSM8K_EXAMPLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("A baker makes 24 muffins in the morning and 18 in the afternoon. She sells 30 of them. How many muffins "
     "does she have left?",
     ("In total she makes 24 + 18 = 42 muffins.", "After selling 30, she has 42 - 30 = 12 muffins left.",
      "The answer is 12.")),
    ("Tom buys 3 notebooks at $4 each and a pen for $2. He pays with a $20 bill. How much change does he get?",
     ("The notebooks cost 3 * 4 = 12 dollars.", "With the pen he spends 12 + 2 = 14 dollars.",
      "His change is 20 - 14 = 6 dollars.", "The answer is 6.")),
    ("A train travels at 60 miles per hour for 2 hours, then at 40 miles per hour for 3 hours. How many miles "
     "does it travel in total?",
     ("In the first part it travels 60 * 2 = 120 miles.", "In the second part it travels 40 * 3 = 120 miles.",
      "In total it travels 120 + 120 = 240 miles.", "The answer is 240.")),
)
MATH_EXAMPLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("What is the sum of all solutions of $x^2 - 5x + 6 = 0$?",
     ("Factor the quadratic: $x^2 - 5x + 6 = (x - 2)(x - 3)$.", "So the solutions are $x = 2$ and $x = 3$.",
      "Their sum is $2 + 3 = 5$.", "The answer is $\\boxed{5}$.")),
    ("Simplify $\\frac{12}{18} + \\frac{1}{3}$.",
     ("First, $\\frac{12}{18} = \\frac{2}{3}$.", "Then $\\frac{2}{3} + \\frac{1}{3} = \\frac{3}{3} = 1$.",
      "The answer is $\\boxed{1}$.")),
    ("How many positive divisors does $36$ have?",
     ("The prime factorization is $36 = 2^2 \\cdot 3^2$.",
      "A divisor picks an exponent from 0 to 2 for each prime, so there are $(2 + 1)(2 + 1) = 9$ divisors.",
      "The answer is $\\boxed{9}$.")),
)


def few_shot_family(problem: Problem) -> str | None:
    """The family of worked examples that fits ``problem``, or None when none does (open prompts)."""
    source = problem.source
    if source in FAMILIES:
        return source
    if source.startswith("processbench:"):
        return "gsm8k" if source.removeprefix("processbench:").startswith("gsm8k") else "math"
    return None


def worked_examples(family: str, count: int, delimiter: str) -> tuple[tuple[str, str], ...]:
    """Up to ``count`` (question, worked solution) pairs of ``family``, steps joined by ``delimiter``."""
    if family == "arith":
        return tuple((spec.question, delimiter.join(_arith_steps(spec)))
                     for spec in arith.generate(count, FEW_SHOT_SEED, {2: 1.0}))
    bank = {"gsm8k": GSM8K_EXAMPLES, "math": MATH_EXAMPLES}[family]
    return tuple((question, delimiter.join(steps)) for question, steps in bank[:count])


def few_shot_examples(count: int, delimiter: str) -> dict[str, tuple[tuple[str, str], ...]]:
    """Every family's worked examples (``count`` each at most): what ``SamplingConfig.few_shot`` holds."""
    return {family: worked_examples(family, count, delimiter) for family in FAMILIES} if count else {}


def _arith_steps(spec: arith.ArithSpec) -> list[str]:
    """One step per operation, then the answer: the format the sim writes and ``arith.first_error`` reads."""
    chain = spec.chain
    steps = [arith.format_step(spec.step_clause(i, chain[i]), chain[i], step.op, step.operand, chain[i + 1])
             for i, step in enumerate(spec.steps)]
    return steps + [arith.format_answer(spec.answer)]
