"""Label rules that never contradict their evidence: overrides, soft rules, trust_answer, mcts root, checker."""

import pytest

from cluster.engine import GenResult, Sample
from search.labeling import STRATEGIES, make_config
from search.labeling.sequential import soft_verdict
from search.program import run_program
from search.sampling import SamplingConfig, sample_solutions
from tests.labeling_fixtures import GOLD, FakeEngine, judge, problem, solution_text


class ScriptedEngine(FakeEngine):
    """The fake engine, except that rollouts from a prefix ending in a listed step succeed at a set rate.

    ``rates[marker]``: successes out of every ``window`` rollouts (by sample index) from a prefix whose last
    step contains ``marker``; rollouts from other prefixes behave as in ``FakeEngine``.
    """

    def __init__(self, solutions, rates, window=8, p_success=1.0):
        super().__init__(solutions, p_success)
        self.rates, self.window, self.index = rates, window, {}

    def _one(self, req):
        last = req.prefix.rstrip().rsplit("\n\n", 1)[-1] if req.prefix else ""
        marker = next((m for m in self.rates if m in last), None)
        if marker is None:
            return super()._one(req)
        samples = []
        for _ in range(req.n):
            i = self.index[marker] = self.index.get(marker, -1) + 1
            ok = i % self.window < self.rates[marker]
            text = f"more work\n\nThe answer is {GOLD if ok else '0'}."
            samples.append(Sample(text, list(range(len(text.split()))), "eos"))
        return GenResult(req.request_key, samples, 0, sum(len(s.token_ids) for s in samples))


def sampled(eng):
    out = run_program(sample_solutions(problem(), "P", SamplingConfig(n_solutions=len(eng.solutions)), judge),
                      eng.generate)
    eng.requests.clear()
    return out


def label(name, out, eng, **options):
    paths = [s.path for s in out.solutions]
    return run_program(STRATEGIES[name].label(out.tree, paths, problem(), "P", make_config(name, options), judge),
                       eng.generate)


def lab_of(res, node):
    return res.labels.get(node.node_id)


def test_failed_step_is_not_overridden_by_a_later_success_unless_asked():
    # step 1 is BAD, yet step 2 (after it) succeeds once in a while: a lucky recovery
    texts = [solution_text(4, bad_at=1).replace("step 2", "step 2 LUCKY")]
    for override, hard, source in ((False, False, "mc"), (True, True, "override")):
        eng = ScriptedEngine(texts, {"LUCKY": 1}, window=4)
        out = sampled(eng)
        res = label("linear", out, eng, k=4, override_failed=override)
        bad, lucky = out.solutions[0].path[1], out.solutions[0].path[2]
        assert bad.n == 4 and bad.n_correct == 0 and lucky.n_correct == 1
        assert (lab_of(res, bad).hard, lab_of(res, bad).label_source) == (hard, source)
        assert res.first_errors == [1 if not override else 3]


def test_binary_keeps_a_probed_failure_bad_and_infers_only_steps_without_rollouts():
    texts = [solution_text(6, bad_at=2).replace("step 4", "step 4 LUCKY")]
    eng = ScriptedEngine(texts, {"LUCKY": 2}, window=4)
    out = sampled(eng)
    path = out.solutions[0].path
    res = label("binary", out, eng, k=4)
    assert res.first_errors == [2]
    for node in path[:2]:
        lab = lab_of(res, node)
        assert lab.hard and (lab.label_source == "inferred") == (node.n == 0)
    assert not lab_of(res, path[2]).hard and lab_of(res, path[2]).label_source == "mc"
    assert all(lab.label_source != "override" for lab in res.labels.values())


@pytest.mark.parametrize("rule,options,source", [
    ("threshold", {"threshold": 0.3}, "mc-threshold"), ("drop", {"drop": 0.5, "threshold": 0.0}, "mc-drop")])
def test_soft_rules_catch_a_wrong_step_with_one_lucky_success(rule, options, source):
    texts = [solution_text(4, bad_at=2).replace("BAD", "BAD SLIP")]
    eng = ScriptedEngine(texts, {"SLIP": 1}, window=8)  # 1 of 8 rollouts from the wrong step succeed
    out = sampled(eng)
    hard = label("linear", out, eng, k=8)
    assert hard.first_errors == [3]  # Math-Shepherd's rule: one success makes the wrong step good
    soft = label("linear", out, eng, k=8, rule=rule, **options)  # same rollouts, reused
    wrong = out.solutions[0].path[2]
    assert soft.n_rollouts == 0 and wrong.n_correct == 1
    assert soft.first_errors == [2]
    assert (lab_of(soft, wrong).hard, lab_of(soft, wrong).label_source) == (False, source)
    assert all(lab_of(soft, n).hard for n in out.solutions[0].path[:2])


def test_adaptive_soft_rule_stops_when_the_test_is_decided():
    texts = [solution_text(8, bad_at=5)]
    eng = FakeEngine(texts, p_success=1.0)
    out = sampled(eng)
    res = label("adaptive", out, eng, search="linear", rule="threshold", threshold=0.2, max_per_step=16)
    path = out.solutions[0].path
    assert res.first_errors == [5]
    for node in path[:5]:  # good steps stop as soon as the posterior clears the threshold
        ok = node.n_correct
        assert soft_verdict(ok, node.n - ok, 0.2, 0.9, capped=False) is True
        assert soft_verdict(ok - 1, 0, 0.2, 0.9, capped=False) is None and node.n < 16
    for node in path[5:-1]:  # wrong steps until the posterior is sure they are below it
        assert soft_verdict(0, node.n, 0.2, 0.9, capped=False) is False
        assert soft_verdict(0, node.n - 1, 0.2, 0.9, capped=False) is None


def test_soft_verdict_never_calls_a_step_without_successes_good():
    assert soft_verdict(0, 3, 0.0, 0.9, capped=False) is None
    assert soft_verdict(0, 3, 0.0, 0.9, capped=True) is False
    assert soft_verdict(1, 3, 0.25, 0.9, capped=True) is True


@pytest.mark.parametrize("name,options", [("binary", {"k": 4}), ("adaptive", {"max_per_step": 4}),
                                          ("linear", {"k": 4}), ("mcts", {"k": 4, "filter_questions": False})])
def test_trust_answer_off_finds_an_error_in_a_correct_answer_solution(name, options):
    recovered = solution_text(6).replace("step 2", "step 2 BAD")  # right answer, wrong step 2
    eng = FakeEngine([recovered, solution_text(6, bad_at=4)])
    out = sampled(eng)
    assert out.solutions[0].correct
    trusted = label(name, out, eng, **options, trust_answer=True)
    assert trusted.first_errors[0] == -1
    eng2 = FakeEngine([recovered, solution_text(6, bad_at=4)])
    out2 = sampled(eng2)
    searched = label(name, out2, eng2, **options, trust_answer=False)
    assert searched.first_errors[0] == 2


def test_mcts_counts_the_sampled_solutions_into_the_root_value():
    texts = [solution_text(4, bad_at=1), solution_text(4), solution_text(4), solution_text(4, bad_at=2)]
    eng = FakeEngine(texts)
    out = sampled(eng)
    res = label("mcts", out, eng, k=4)
    assert out.tree.root.n == 0  # four solutions are four root samples: no root rollout needed
    assert not res.filtered and res.first_errors == [1, -1, -1, 2]
    eng = FakeEngine(texts[1:3])  # two right answers: the filter needs 2 more root samples, also right
    out = sampled(eng)
    res = label("mcts", out, eng, k=4)
    assert out.tree.root.n == 2 and res.filtered


def test_mcts_budget_refusal_is_not_a_filtered_question():
    eng = FakeEngine([solution_text(4, bad_at=1), solution_text(4)], p_success=0.5)
    out = sampled(eng)
    res = label("mcts", out, eng, k=8, rollout_budget=2)  # the root probe (6 more) does not fit
    assert not res.filtered and res.n_rollouts == 0 and out.tree.root.n == 0
    assert res.first_errors == [None, -1]  # undetermined, not dropped: the correct one is still labeled


def test_the_checker_bounds_the_binary_search():
    steps = [f"We have {i} + 1 = {i + 1}." for i in range(9)]
    steps[6] = "We have 6 + 1 = 9."  # a wrong arithmetic claim, and from here the answer is wrong
    text = "\n\n".join([s + (" BAD" if i == 6 else "") for i, s in enumerate(steps)] + ["The answer is 0."])
    runs = {}
    for checker in ("none", "arith"):
        eng = FakeEngine([text])
        out = sampled(eng)
        runs[checker] = (label("binary", out, eng, k=4, checker=checker), out)
    (plain, _), (checked, out) = runs["none"], runs["arith"]
    assert plain.first_errors == checked.first_errors == [6]
    assert checked.n_rollouts < plain.n_rollouts
    lab = lab_of(checked, out.solutions[0].path[6])
    assert lab.label_source == "arith" and not lab.hard and lab.n == 0


def test_linear_takes_no_rollouts_from_the_checkers_step_on():
    text = "\n\n".join(["We have 2 + 2 = 4.", "We have 4 + 1 = 7. BAD", "step 2", "The answer is 0."])
    eng = FakeEngine([text])
    out = sampled(eng)
    res = label("linear", out, eng, k=2, checker="arith")
    path = out.solutions[0].path
    assert [n.n for n in path[:-1]] == [2, 0, 0] and res.first_errors == [1]


def test_rule_and_checker_names_are_validated():
    for bad in ({"rule": "vote"}, {"checker": "judge"}, {"drop": 1.0}, {"level": 0.3}):
        with pytest.raises(ValueError):
            make_config("binary", bad)
    with pytest.raises(ValueError, match="soft"):
        make_config("adaptive", {"target": "soft", "rule": "drop"})


SIM_BASES = [("linear", {"k": 2}), ("binary", {"k": 2}), ("adaptive", {"max_per_step": 4}),
             ("mcts", {"k": 4, "rollout_budget": 40})]


@pytest.mark.parametrize("name,base", SIM_BASES)
@pytest.mark.parametrize("rule", ["hard", "threshold", "drop"])
@pytest.mark.parametrize("trust_answer", [True, False])
@pytest.mark.parametrize("checker", ["none", "arith"])
def test_every_combination_keeps_the_invariants_on_the_sim_engine(name, base, rule, trust_answer, checker):
    from cluster.problems.loaders import load_arith
    from cluster.sim_engine import SimConfig, SimEngine
    from tests.labeling_fixtures import assert_label_invariants

    engine = SimEngine(SimConfig(arith_error_rate=0.1, logic_error_rate=0.1, recovery_rate=0.3))
    options = {**base, "rule": rule, "trust_answer": trust_answer, "checker": checker}
    for prob in load_arith(4, seed=1, mix={4: 0.5, 7: 0.5}):
        prompt = engine.apply_chat_template([{"role": "user", "content": prob.question}])
        out = run_program(sample_solutions(prob, prompt, SamplingConfig(n_solutions=4), judge), engine.generate)
        paths = [s.path for s in out.solutions]
        res = run_program(STRATEGIES[name].label(out.tree, paths, prob, prompt, make_config(name, options), judge),
                          engine.generate)
        assert_label_invariants(res, out.tree, paths)
        assert not any(lab.hard and lab.n >= 2 and lab.n_correct == 0 for lab in res.labels.values())
