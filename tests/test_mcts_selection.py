"""MCTS selection (OmegaPRM): the score Q + U against hand-computed values, and which candidate is picked.

Q = alpha^(1 - MC(s)) * beta^(len(r) / L) and U = c_puct * sqrt(sum N) / (1 + N(s)) (``mcts._score``). The
expected numbers below are worked out by hand in the comments, not by calling the formula again.
"""

from __future__ import annotations

import pytest

from search.labeling.mcts import MctsConfig, _Candidate, _score, _select
from search.program import run_program
from search.tree import Node, Tree
from tests.labeling_fixtures import FakeEngine, judge, problem, solution_text

OMEGA = MctsConfig()  # alpha 0.5, beta 0.9, L 500, c_puct 0.125


def _candidate(tree: Tree, state_text: str, tokens: list[int]) -> _Candidate:
    """A continuation of ``tokens[i]`` tokens per step below the state ``state_text`` (a root child)."""
    state = tree.add_child(tree.root, state_text)
    steps = tree.add_path([f"{state_text} step {i}" for i in range(len(tokens))], tokens, parent=state)
    return _Candidate(state, steps)


SCORE_TABLE = [
    # mc, continuation tokens, visits by state ("s" is the candidate's state), expected Q + U
    (0.5, [0], {}, 0.7071067811865476),  # Q = 0.5^0.5 * 0.9^0 = sqrt(1/2); U = 0 (nothing visited yet)
    (1.0, [200, 300], {}, 0.9),  # Q = 0.5^0 * 0.9^(500/500) = 0.9; U = 0
    (0.0, [250], {"s": 3, "t": 1}, 0.5368416490252569),  # Q = 0.5 * 0.9^0.5 = 0.47434...; U = 0.125 * 2 / 4
    (0.25, [1000], {"t": 9}, 0.8566288815761021),  # Q = 0.5^0.75 * 0.81 = 0.48163...; U = 0.125 * 3 / 1
]


@pytest.mark.parametrize(("mc", "tokens", "visits", "want"), SCORE_TABLE)
def test_selection_score_equals_the_hand_computed_value(mc, tokens, visits, want):
    tree = Tree("p")
    cand = _candidate(tree, "s", tokens)
    by_id = {tree.add_child(tree.root, name).node_id: n for name, n in visits.items()}
    assert _score(cand, mc, by_id, OMEGA) == pytest.approx(want, rel=1e-12)


def test_score_with_other_constants_follows_each_of_them():
    cfg = MctsConfig(alpha=0.25, beta=0.5, length_scale=100, c_puct=2.0)
    tree = Tree("p")
    cand = _candidate(tree, "s", [100])
    visits = {cand.state.node_id: 1, tree.add_child(tree.root, "t").node_id: 3}
    # Q = 0.25^(1 - 0.5) * 0.5^(100/100) = 0.5 * 0.5 = 0.25; U = 2 * sqrt(4) / (1 + 1) = 2
    assert _score(cand, 0.5, visits, cfg) == pytest.approx(2.25, rel=1e-12)


def _mc(values: dict[str, float]):
    return lambda node: values[node.text]


def test_selection_prefers_the_shorter_wrong_continuation_of_one_state():
    tree = Tree("p")
    long, short = _candidate(tree, "s", [300, 300]), _candidate(tree, "s", [40])
    # same state, same U; Q: 0.5^0.5 * 0.9^(600/500) = 0.6023 < 0.5^0.5 * 0.9^(40/500) = 0.7012
    assert _select([long, short], _mc({"s": 0.5}), {}, OMEGA) is short


def test_selection_prefers_the_state_more_likely_to_succeed():
    tree = Tree("p")
    weak, strong = _candidate(tree, "weak", [50]), _candidate(tree, "strong", [50])
    # Q: 0.5^0.8 = 0.5743 vs 0.5^0.2 = 0.8706 (same length factor), U = 0 for both
    assert _select([weak, strong], _mc({"weak": 0.2, "strong": 0.8}), {}, OMEGA) is strong


def test_exploration_term_moves_selection_to_the_unvisited_state():
    tree = Tree("p")
    visited, fresh = _candidate(tree, "visited", [50]), _candidate(tree, "fresh", [50])
    visits = {visited.state.node_id: 3}
    mc = _mc({"visited": 0.5, "fresh": 0.5})
    # equal Q; U: 0.125 * sqrt(3) / 4 = 0.0541 vs 0.125 * sqrt(3) / 1 = 0.2165
    assert _select([visited, fresh], mc, visits, OMEGA) is fresh
    # without exploration the tie goes to the first in pool order
    assert _select([visited, fresh], mc, visits, MctsConfig(c_puct=0.0)) is visited


def test_exploration_can_outweigh_a_better_state():
    tree = Tree("p")
    good, fresh = _candidate(tree, "good", [0]), _candidate(tree, "fresh", [0])
    visits = {good.state.node_id: 4}
    mc = _mc({"good": 0.9, "fresh": 0.5})
    # Q: 0.5^0.1 = 0.9330 vs 0.5^0.5 = 0.7071; U with c_puct 1: 2 / 5 = 0.4 vs 2 / 1 = 2
    assert _select([good, fresh], mc, visits, OMEGA) is good  # c_puct 0.125: U 0.05 vs 0.25, Q wins
    assert _select([good, fresh], mc, visits, MctsConfig(c_puct=1.0)) is fresh


def _first_error_found(res, paths: list[list[Node]]) -> list[bool]:
    """Per path: was any of its steps labeled bad by the search (a located first error)?"""
    return [any(n.node_id in res.labels and not res.labels[n.node_id].hard for n in p[:-1]) for p in paths]


def test_one_selection_searches_the_candidate_the_score_picks():
    """Through ``label``: with one selection allowed only the picked wrong solution is binary-searched. The
    long one comes first in pool order, so a constant score would search it instead of the short one."""
    from search.labeling import STRATEGIES, make_config
    from search.sampling import SamplingConfig, sample_solutions

    texts = [solution_text(3), solution_text(12, bad_at=9), solution_text(3, bad_at=1)]
    eng = FakeEngine(texts)
    out = run_program(sample_solutions(problem(), "P", SamplingConfig(n_solutions=3), judge), eng.generate)
    paths = [s.path for s in out.solutions]
    cfg = make_config("mcts", {"k": 3, "search_limit": 1, "length_scale": 10, "rollout_budget": 200})
    res = run_program(STRATEGIES["mcts"].label(out.tree, paths, problem(), "P", cfg, judge), eng.generate)
    assert res.stats["iterations"] == 1
    assert _first_error_found(res, paths) == [False, False, True]
