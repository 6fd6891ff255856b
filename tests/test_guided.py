"""Guided search strategies on the simulator (exact truth) and on a fake engine with known answers."""

from __future__ import annotations

from collections import Counter

import pytest

from cluster.engine import GenRequest, GenResult
from cluster.problems.loaders import load_arith
from cluster.sim_engine import SimConfig, SimEngine
from search.guided import STRATEGIES, make_config, make_scorer
from search.guided.base import BeamConfig, BestOfNConfig, Candidate, DvtsConfig, MajorityConfig, aggregate
from search.guided.beam import beams_kept
from search.program import run_program, run_programs
from search.sampling import SamplingConfig, build_prompt
from tests.labeling_fixtures import FakeEngine, judge, problem, solution_text

NOISY_SIM = SimConfig(arith_error_rate=0.15, logic_error_rate=0.1, seed=3)


def _sim_run(strategy: str, scorer_name: str, n: int, problems: int = 12, **options):
    engine = SimEngine(NOISY_SIM)
    scorer = make_scorer(scorer_name, {"k": 4} if scorer_name == "mc" else {},
                         **({"judge": judge} if scorer_name == "mc" else {}))
    cfg = make_config(strategy, {"n": n, **options})
    probs = load_arith(problems, 7, {3: 0.5, 4: 0.5})
    programs = {p.problem_id: STRATEGIES[strategy].run(p, build_prompt(engine.apply_chat_template, p, SamplingConfig()),
                                                   cfg, scorer, judge) for p in probs}
    return run_programs(programs, engine.generate)


def test_majority_picks_the_most_common_answer():
    texts = [solution_text(2, bad_at=0)] * 3 + [solution_text(2)] * 2  # 3 say "0", 2 say the gold "42"
    result = run_program(STRATEGIES["majority"].run(problem(), "q", MajorityConfig(n=5), None, judge),
                         FakeEngine(texts).generate)
    assert result.answer == "0" and not result.correct
    assert Counter(c.answer for c in result.candidates) == {"0": 3, "42": 2}


@pytest.mark.parametrize("strategy", ["best_of_n", "beam", "dvts"])
def test_oracle_scorer_finds_a_correct_answer_whenever_one_was_sampled(strategy):
    results = _sim_run(strategy, "arith_truth", n=8, aggregation="min")
    for res in results.values():
        fully_right = [c for c in res.candidates if aggregate(c, "min") == 1.0 and c.correct]
        assert res.correct == bool(fully_right)
    assert sum(r.correct for r in results.values()) >= 11  # 8 tries per step at ~25% step error


def test_best_of_n_with_oracle_beats_or_ties_majority_on_the_same_samples():
    bon, maj = _sim_run("best_of_n", "arith_truth", n=4), _sim_run("majority", "arith_truth", n=4)
    for pid, res in bon.items():
        assert [c.text for c in res.candidates] == [c.text for c in maj[pid].candidates]  # same samples
        chosen = res.candidates[res.chosen]
        assert chosen.scores[-1] == max(c.scores[-1] for c in res.candidates) and res.answer == chosen.answer
        if any(c.correct and c.scores[-1] == 1.0 for c in res.candidates):
            assert res.correct
    assert sum(r.correct for r in bon.values()) >= sum(r.correct for r in maj.values())


def test_weighted_best_of_n_with_constant_scores_is_majority_vote():
    class Constant:
        def score(self, problem, prompt, prefixes):
            return [0.5] * len(prefixes)
            yield

    texts = [solution_text(1, bad_at=0)] * 2 + [solution_text(1)] * 3
    run = STRATEGIES["weighted_best_of_n"].run(problem(), "q", BestOfNConfig(n=5), Constant(), judge)
    assert run_program(run, FakeEngine(texts).generate).answer == "42"


def test_weighted_best_of_n_sums_scores_per_answer():
    class FavorsBad:  # 0.9 for solutions with a BAD step, 0.2 otherwise
        def score(self, problem, prompt, prefixes):
            return [0.9 if "BAD" in "".join(p) else 0.2 for p in prefixes]
            yield

    texts = [solution_text(1, bad_at=0)] * 2 + [solution_text(1)] * 3  # 2 x 0.9 = 1.8 > 3 x 0.2 = 0.6
    run = STRATEGIES["weighted_best_of_n"].run(problem(), "q", BestOfNConfig(n=5), FavorsBad(), judge)
    assert run_program(run, FakeEngine(texts).generate).answer == "0"


@pytest.mark.parametrize(("aggregation", "expected"), [("last", 0.9), ("min", 0.2), ("prod", 0.9 * 0.2 * 0.5)])
def test_aggregations(aggregation, expected):
    assert aggregate(Candidate(["a", "b", "c"], [0.5, 0.2, 0.9]), aggregation) == pytest.approx(expected)


def test_beam_expands_step_by_step_with_about_n_samples_per_round():
    engine = SimEngine(NOISY_SIM)
    seen: list[list[GenRequest]] = []

    def generate(reqs: list[GenRequest]) -> list[GenResult]:
        seen.append(reqs)
        return engine.generate(reqs)

    p = load_arith(1, 7, {4: 1.0})[0]
    prompt = build_prompt(engine.apply_chat_template, p, SamplingConfig())
    cfg = BeamConfig(n=8, beam_width=4)
    run_program(STRATEGIES["beam"].run(p, prompt, cfg, make_scorer("arith_truth"), judge), generate)
    assert len(seen) >= 5  # 4 operation steps + the answer step, one round each
    assert all(r.stop == (cfg.delimiter,) for reqs in seen for r in reqs)
    assert sum(r.n for r in seen[0]) == 8 and len(seen[1]) == beams_kept(cfg) == 2


def test_dvts_runs_n_over_m_independent_subtrees():
    engine = SimEngine(NOISY_SIM)
    seen: list[list[GenRequest]] = []

    def generate(reqs):
        seen.append(reqs)
        return engine.generate(reqs)

    p = load_arith(1, 7, {4: 1.0})[0]
    prompt = build_prompt(engine.apply_chat_template, p, SamplingConfig())
    run_program(STRATEGIES["dvts"].run(p, prompt, DvtsConfig(n=8, beam_width=4), make_scorer("arith_truth"), judge),
                generate)
    assert [r.n for r in seen[1]] == [4, 4]  # 2 subtrees, each keeps 1 beam and samples M = 4 children


@pytest.mark.parametrize(("n", "width", "frac", "kept"), [(8, 4, 0.0, 2), (8, 4, 0.25, 2), (16, 4, 0.5, 8),
                                                          (2, 4, 0.0, 1)])
def test_beams_kept_top_n_over_m_or_top_fraction(n, width, frac, kept):
    assert beams_kept(BeamConfig(n=n, beam_width=width, keep_frac=frac)) == kept


def test_mc_scorer_values_prefixes_by_rollouts():
    scorer = make_scorer("mc", {"k": 4}, judge=judge)
    prefixes = [["step 0\n\n"], ["step 0 BAD\n\n"], ["step 0\n\n"]]
    engine = FakeEngine([solution_text(1)])
    assert run_program(scorer.score(problem(), "q", prefixes), engine.generate) == [1.0, 0.0, 1.0]
    assert sum(r.n for r in engine.requests) == 8  # the repeated prefix is rolled out once


def test_tool_scorer_zero_from_the_first_wrong_claim():
    scorer = make_scorer("tool")
    prefixes = [["2 + 3 = 5.\n\n"], ["2 + 3 = 5.\n\n", "5 * 2 = 11.\n\n"], ["2 + 3 = 6.\n\n", "6 * 2 = 12."]]
    assert run_program(scorer.score(problem(), "q", prefixes), FakeEngine([]).generate) == [1.0, 0.0, 0.0]


def test_unknown_scorer_option_and_config_key_are_errors():
    with pytest.raises(TypeError):
        make_scorer("mc", {"kk": 4}, judge=judge)
    with pytest.raises(ValueError, match="unknown key"):
        make_config("beam", {"beams": 4})
    with pytest.raises(ValueError, match="aggregation"):
        BestOfNConfig(aggregation="mean")


@pytest.mark.parametrize(("strategy", "key"), [("dvts", "keep_frac"), ("majority", "aggregation"),
                                               ("majority", "beam_width"), ("best_of_n", "step_max_new_tokens"),
                                               ("weighted_best_of_n", "max_steps"), ("beam", "max_new_tokens")])
def test_a_key_the_strategy_does_not_read_is_refused(strategy, key):
    with pytest.raises(ValueError, match=f"unknown key.*{key}"):
        make_config(strategy, {key: 1})


@pytest.mark.parametrize(("strategy", "key"), [("beam", "keep_frac"), ("dvts", "beam_width"),
                                               ("best_of_n", "aggregation"), ("majority", "max_new_tokens")])
def test_each_strategy_accepts_its_own_keys(strategy, key):
    value = {"keep_frac": 0.5, "beam_width": 2, "aggregation": "min", "max_new_tokens": 64}[key]
    assert getattr(make_config(strategy, {key: value}), key) == value


def test_majority_tie_goes_to_the_answer_sampled_first():
    texts = [solution_text(1), solution_text(1, bad_at=0), solution_text(1, bad_at=0), solution_text(1)]
    result = run_program(STRATEGIES["majority"].run(problem(), "q", MajorityConfig(n=4), None, judge),
                         FakeEngine(texts).generate)
    assert result.answer == "42" and result.correct and result.chosen == 0
    flipped = run_program(STRATEGIES["majority"].run(problem(), "q", MajorityConfig(n=4), None, judge),
                          FakeEngine(texts[1:] + texts[:1]).generate)
    assert flipped.answer == "0" and not flipped.correct


def test_two_prompts_never_share_samples():
    engine = FakeEngine([solution_text(1)])
    for prompt in ("style a", "style b"):
        run_program(STRATEGIES["majority"].run(problem(), prompt, MajorityConfig(n=2), None, judge), engine.generate)
    assert len({r.request_key for r in engine.requests}) == 2


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (1, 0, 2, 3), (2, 1, 3, 0), (3, 2, 1, 0)])
def test_report_and_guided_majority_break_a_tie_the_same_way(order):
    from pipelines.report import vote_curves

    texts = [solution_text(1), solution_text(1), solution_text(1, bad_at=0), solution_text(1, bad_at=0)]
    texts = [texts[i] for i in order]  # a 2-2 tie between the gold "42" and "0", in four sample orders
    result = run_program(STRATEGIES["majority"].run(problem(), "q", MajorityConfig(n=4), None, judge),
                         FakeEngine(texts).generate)
    rows = [{"problem_id": "p", "answer": judge(t, "42").answer, "correct": judge(t, "42").correct} for t in texts]
    assert vote_curves(rows)["majority"][-1] == float(result.correct)
    assert result.correct == (order[0] in (0, 1))  # the answer sampled first wins the tie
