"""The arith generator: seeded, exact round trips through the question text, and exact first-error truth."""

from __future__ import annotations

import pytest

from cluster.problems.arith import (
    MAX_STEPS,
    TEMPLATES,
    first_error,
    format_answer,
    format_step,
    generate,
    parse_question,
)

ALL_COUNTS = {k: 1.0 for k in range(1, MAX_STEPS + 1)}
Q = "Mia has 48 marbles. She gives half of them to her brother. Then she buys 7 more. " \
    "How many marbles does Mia have now?"


def test_question_parses_back_into_the_exact_spec_for_every_step_count():
    specs = generate(600, seed=3, mix=ALL_COUNTS)
    assert all(parse_question(s.question) == s for s in specs)
    assert {len(s.steps) for s in specs} == set(range(1, MAX_STEPS + 1))
    assert {s.template for spec in specs for s in spec.steps} == set(range(len(TEMPLATES)))


def test_hand_written_example_parses_to_its_chain():
    spec = parse_question(Q)
    assert spec is not None
    assert spec.chain == [48, 24, 31] and spec.answer == 31
    assert [(s.op, s.operand) for s in spec.steps] == [("/", 2), ("+", 7)]
    assert spec.meta() == {"chain": [48, 24, 31], "ops": [["/", 2], ["+", 7]], "n_ops": 2}


def test_generation_is_seeded_and_prefix_stable():
    assert generate(20, seed=1) == generate(20, seed=1)
    assert generate(20, seed=1)[:5] == generate(5, seed=1)
    assert generate(20, seed=1) != generate(20, seed=2)


def test_mix_controls_step_counts():
    specs = generate(200, seed=0, mix={2: 0.5, 12: 0.5})
    counts = {len(s.steps) for s in specs}
    assert counts == {2, 12}
    assert {len(s.steps) for s in generate(50, seed=0, mix={1: 1.0})} == {1}


@pytest.mark.parametrize("mix", [{0: 1.0}, {13: 1.0}, {2: -1.0}, {2: 0.0}, {}])
def test_bad_mix_is_rejected(mix):
    with pytest.raises(ValueError):
        generate(1, seed=0, mix=mix)


def test_values_stay_positive_small_and_divisions_exact():
    for spec in generate(500, seed=7, mix=ALL_COUNTS):
        chain = spec.chain
        assert all(0 < v < 1000 for v in chain)
        for value, step in zip(chain, spec.steps, strict=False):
            if step.op == "/":
                assert value % step.operand == 0


@pytest.mark.parametrize("text", [
    "",
    "What is 2 + 2?",
    Q.replace("She gives", "He gives"),  # pronoun does not match the name
    Q.replace("How many marbles", "How many apples"),
    Q.replace("buys 7 more", "flies 7 more"),
    Q.replace("Then she", "Then, she"),
])
def test_non_arith_or_tampered_text_does_not_parse(text):
    assert parse_question(text) is None


@pytest.mark.parametrize("solution, expected", [
    ("She gives half of 48 to her brother: 48 / 2 = 24.\n\nShe buys 7 more: 24 + 7 = 31.\n\n"
     "The answer is 31.", -1),
    ("x: 48 / 2 = 24.\n\nx: 24 + 7 = 31.", -1),  # right so far, cut short: no wrong step
    ("x: 48 / 2 = 25.\n\nx: 25 + 7 = 32.\n\nThe answer is 32.", 0),  # wrong result
    ("x: 48 / 2 = 24.\n\nx: 24 + 7 = 30.\n\nThe answer is 30.", 1),
    ("x: 48 - 2 = 24.\n\nx: 24 + 7 = 31.\n\nThe answer is 31.", 0),  # right value, wrong arithmetic
    ("x: 48 / 2 = 24.\n\nx: 24 + 7 = 31.\n\nThe answer is 30.", 2),  # wrong final answer
    ("x: 48 / 2 = 24.\n\nI am not sure.\n\nThe answer is 31.", 1),  # unreadable step
    ("x: 48 / 2 = 24.\n\nx: 24 + 7 = 31.\n\nThe answer is 31.\n\nx: 31 + 1 = 32.", 3),  # after the answer
    ("x: 48 / 2 = 25.\n\nx: 25 + 6 = 31.\n\nThe answer is 31.", 0),  # recovered, still wrong at 0
    ("x: 48 / 2 = 24.\n\n\n\nx: 24 + 7 = 31.\n\n\n\nThe answer is 31.", -1),  # repeated delimiters
])
def test_first_error_table(solution, expected):
    assert first_error(Q, solution) == expected


def test_first_error_uses_the_given_delimiter():
    assert first_error(Q, "x: 48 / 2 = 24.\n---\nx: 24 + 7 = 32.\n---\nThe answer is 32.", "\n---\n") == 1


def test_first_error_rejects_non_arith_questions():
    with pytest.raises(ValueError):
        first_error("What is 2 + 2?", "The answer is 4.")


def test_formatting_helpers_match_the_solution_grammar():
    spec = parse_question(Q)
    step = format_step(spec.step_clause(0, 48), 48, "/", 2, 24)
    assert step == "She gives half of 48 to her brother: 48 / 2 = 24."
    assert first_error(Q, step + "\n\n" + format_step(spec.step_clause(1, 24), 24, "+", 7, 31) + "\n\n"
                       + format_answer(31)) == -1
