import pytest

from search.problems import Problem
from search.program import run_program
from search.sampling import SamplingConfig, build_prompt, prompt_messages, sample_solutions, step_token_counts
from search.tree import split_steps
from tests.labeling_fixtures import FakeEngine, judge, problem, solution_text


def test_build_prompt_puts_system_and_few_shot_turns_before_the_question():
    cfg = SamplingConfig(system_prompt="Be brief.", few_shot=[("1+1?", "2")], few_shot_source="test")
    seen = []
    prompt = build_prompt(lambda msgs: seen.append(msgs) or "P", problem(), cfg)
    assert prompt == "P"
    assert [m["role"] for m in seen[0]] == ["system", "user", "assistant", "user"]
    assert seen[0][-1]["content"] == problem().question


def test_worked_examples_go_only_before_problems_of_their_source():
    arith = Problem.make("Ann has 3 apples. She buys 2 more. How many apples does she have now?", "5", "arith")
    gsm8k = Problem.make("A robe takes 2 bolts of blue fiber. How many bolts in total?", "3", "gsm8k")
    bench = Problem.make("What is 2 + 2?", "4", "processbench:gsm8k-1")
    cfg = SamplingConfig(few_shot=[("1+1?", "2")])  # the run's examples are arith ones
    assert [m["role"] for m in prompt_messages(arith, cfg)] == ["user", "assistant", "user"]
    for other in (gsm8k, bench):
        assert [m["content"] for m in prompt_messages(other, cfg)] == [other.question]


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match="unknown"):
        SamplingConfig.from_dict({"n_solution": 3})
    with pytest.raises(ValueError):
        SamplingConfig(n_solutions=0)
    assert SamplingConfig.from_dict({"few_shot": [["q", "a"]]}).few_shot == (("q", "a"),)


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
