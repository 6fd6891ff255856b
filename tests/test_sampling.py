import pytest

from cluster.problems.arith import first_error
from cluster.problems.few_shot import few_shot_examples, worked_examples
from cluster.problems.problem import Problem
from cluster.problems.steps import split_steps
from search.program import run_program
from search.sampling import SamplingConfig, build_prompt, prompt_messages, sample_solutions, step_token_counts
from tests.labeling_fixtures import FakeEngine, judge, problem, solution_text
from verifier.answers import extract_answer


def test_build_prompt_puts_system_and_few_shot_turns_before_the_question():
    word_problem = Problem.make("What is six times seven?", "42", "gsm8k")
    cfg = SamplingConfig(system_prompt="Be brief.", few_shot={"gsm8k": [("1+1?", "2")]})
    seen = []
    prompt = build_prompt(lambda msgs: seen.append(msgs) or "P", word_problem, cfg)
    assert prompt == "P"
    assert [m["role"] for m in seen[0]] == ["system", "user", "assistant", "user"]
    assert seen[0][-1]["content"] == word_problem.question


def test_worked_examples_go_only_before_problems_of_their_family():
    arith = Problem.make("Ann has 3 apples. She buys 2 more. How many apples does she have now?", "5", "arith")
    gsm8k = Problem.make("A robe takes 2 bolts of blue fiber. How many bolts in total?", "3", "gsm8k")
    bench = Problem.make("What is 2 + 2?", "4", "processbench:gsm8k-1")
    olympiad = Problem.make("Find all n with n^2 = 4.", "2", "processbench:olympiadbench-3")
    math = Problem.make("Find x if 2x = 4.", "2", "math")
    open_prompt = Problem.make("Name a prime.", "", "open")
    cfg = SamplingConfig(few_shot=few_shot_examples(2, "\n\n"))
    shown = {p.source: [m["content"] for m in prompt_messages(p, cfg)] for p in (arith, gsm8k, bench, olympiad, math)}
    for source, family in [("arith", "arith"), ("gsm8k", "gsm8k"), ("processbench:gsm8k-1", "gsm8k"),
                           ("processbench:olympiadbench-3", "math"), ("math", "math")]:
        (q1, s1), (q2, s2) = worked_examples(family, 2, "\n\n")
        assert shown[source][:4] == [q1, s1, q2, s2]  # two worked examples of its own family, then the question
    assert "Tom buys 3 notebooks" in shown["gsm8k"][2] and "\\boxed{5}" in shown["math"][1]
    assert shown["arith"][0].endswith("now?") and "boxed" not in "".join(shown["arith"])
    assert [m["content"] for m in prompt_messages(open_prompt, cfg)] == [open_prompt.question]  # none fit


@pytest.mark.parametrize(("family", "answers"), [("gsm8k", ["12", "6", "240"]), ("math", ["5", "1", "9"])])
def test_built_in_worked_examples_end_in_the_answer_the_verifier_reads(family, answers):
    examples = worked_examples(family, 3, "\n\n")
    assert [extract_answer(solution) for _, solution in examples] == answers
    assert all(len(solution.split("\n\n")) >= 3 for _, solution in examples)  # a step per paragraph


def test_arith_worked_examples_are_right_by_the_ground_truth():
    for question, solution in worked_examples("arith", 3, "\n\n"):
        assert first_error(question, solution) == -1 and len(solution.split("\n\n")) == 3  # 2 ops + answer


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match="unknown"):
        SamplingConfig.from_dict({"n_solution": 3})
    with pytest.raises(ValueError):
        SamplingConfig(n_solutions=0)
    assert SamplingConfig.from_dict({"few_shot": {"gsm8k": [["q", "a"]]}}).few_shot == {"gsm8k": (("q", "a"),)}


def test_sample_solutions_asks_once_for_n_and_builds_a_tree_with_terminal_leaves():
    texts = [solution_text(3), solution_text(3, bad_at=1)]
    eng = FakeEngine(texts)
    cfg = SamplingConfig(n_solutions=2, seed=5)
    out = run_program(sample_solutions(problem(), "P", cfg, judge), eng.generate)
    assert len(eng.requests) == 1 and eng.requests[0].n == 2 and eng.requests[0].prefix == ""
    assert [s.correct for s in out.solutions] == [True, False]
    first, second = out.solutions
    assert "".join(n.text for n in first.path) == texts[0]
    assert first.path[0] is second.path[0]  # the shared first step is one node
    assert first.path[-1].terminal and first.path[-1].outcome_correct
    assert second.path[-1].terminal and second.path[-1].outcome_correct is False
    assert not first.path[-2].terminal
    again = FakeEngine(texts)
    run_program(sample_solutions(problem(), "P", cfg, judge), again.generate)
    assert again.requests == eng.requests  # deterministic key and seed


def test_truncated_sample_is_not_marked_terminal():
    class Cut(FakeEngine):
        def _one(self, req):
            res = super()._one(req)
            res.samples[0].finish_reason = "length"
            return res

    out = run_program(sample_solutions(problem(), "P", SamplingConfig(n_solutions=1), judge),
                      Cut([solution_text(2)]).generate)
    assert not out.solutions[0].path[-1].terminal


def test_step_token_counts_sum_to_the_sample_count():
    steps = split_steps("a b c\n\nd\n\ne f")
    counts = step_token_counts(steps, 7)
    assert sum(counts) == 7 and counts[0] >= counts[1]
    assert step_token_counts([], 3) == []
