"""Trace mining on hand-built trees whose truth is known exactly."""

from __future__ import annotations

import pytest

from search.traces.miners import MineConfig, Solution, mine, shortest_correct, solutions_from_tree
from search.traces.reflection import Detour, ReflectionConfig, StepLabel, reflect
from tests.traces_fixtures import S1, S2, S3, W1, W2, W2B, bad, good, marble_tree
from verifier.arith_claims import check_step


def test_shortest_picks_fewest_tokens_among_verified_and_reports_ratio_to_median():
    tree, labels, named = marble_tree()
    [trace] = mine([tree], labels, "shortest")
    assert trace.text == S1 + S2 + S3
    assert trace.n_tokens == 30
    assert trace.median_correct_tokens == pytest.approx(32.0)  # median of 30 and 34
    assert trace.length_ratio == pytest.approx(30 / 32)
    assert trace.node_ids == [named["s1"].node_id, named["s2"].node_id, named["s3"].node_id]


def test_shortest_verified_skips_a_path_with_a_bad_step_but_answer_only_takes_it():
    tree, labels, named = marble_tree()
    labels[named["s1"].node_id] = bad()
    [verified] = mine([tree], labels, "shortest", MineConfig(mode="verified"))
    [loose] = mine([tree], labels, "shortest", MineConfig(mode="answer-only"))
    assert verified.n_tokens == 34 and verified.text.startswith("First")
    assert loose.n_tokens == 30


def test_shortest_ties_break_by_text_hash_regardless_of_input_order():
    a = Solution("a", "p", ("x",), ("alpha\n\n",), 5, "1", True)
    b = Solution("b", "p", ("y",), ("beta\n\n",), 5, "1", True)
    labels = {"x": good(), "y": good()}
    first = shortest_correct([a, b], labels).node_ids
    assert shortest_correct([b, a], labels).node_ids == first


def test_shortest_none_without_a_correct_solution():
    sol = Solution("a", "p", ("x",), ("alpha\n\n",), 5, "2", False)
    assert shortest_correct([sol], {"x": good()}) is None


def test_backtrack_contains_exactly_its_wrong_step_then_reflection_then_return():
    tree, labels, named = marble_tree()
    for seed in range(6):
        [trace] = mine([tree], labels, "backtrack", MineConfig(seed=seed))
        assert len(trace.wrong_positions) == 1
        pos = trace.wrong_positions[0]
        wrong_id = trace.node_ids[pos]
        assert wrong_id in {named[k].node_id for k in ("w1", "w2", "w2b")}
        assert trace.segment_kinds[pos + 1] == "reflection"
        # the good steps, read without the detour, are exactly the shortest good path
        goods = [s for s, k in zip(trace.segments, trace.segment_kinds, strict=True) if k == "step"]
        assert goods == [S1, S2, S3]
        start, end = trace.wrong_spans()[0]
        assert trace.text[start:end] == tree.nodes[wrong_id].text
        reflection = trace.segments[pos + 1]
        # feedback: the failed arithmetic claim when the step has one, else the MC evidence
        wrong_claims = check_step(tree.nodes[wrong_id].text).wrong
        if wrong_claims:
            assert str(wrong_claims[0]) in reflection and "48" in reflection
        else:
            assert "0 of 8" in reflection
        if wrong_id == named["w1"].node_id:
            assert "step 1" in reflection and "start" in reflection
            assert trace.segments[pos + 2] == S1  # returns to the beginning, then the good step
        else:
            assert "step 2" in reflection and "step 1" in reflection and "48 marbles" in reflection
            assert trace.segments[pos + 2] == S2


def test_backtrack_is_deterministic_per_seed():
    tree, labels, _ = marble_tree()
    one = mine([tree], labels, "backtrack", MineConfig(seed=3))
    two = mine([tree], labels, "backtrack", MineConfig(seed=3))
    assert [t.text for t in one] == [t.text for t in two]
    assert [t.trace_id for t in one] == [t.trace_id for t in two]


def test_journey_respects_caps_and_keeps_every_wrong_step_followed_by_its_reflection():
    tree, labels, named = marble_tree()
    [trace] = mine([tree], labels, "journey", MineConfig(max_wrong_per_node=2, max_wrong_per_trace=3))
    wrong = [trace.node_ids[i] for i in trace.wrong_positions]
    assert sorted(wrong) == sorted(named[k].node_id for k in ("w1", "w2", "w2b"))
    for i in trace.wrong_positions:
        assert trace.segment_kinds[i + 1] == "reflection"
    assert [s for s, k in zip(trace.segments, trace.segment_kinds, strict=True) if k == "wrong"].count(W1) == 1
    assert {W2, W2B} <= set(trace.segments)
    capped = mine([tree], labels, "journey", MineConfig(max_wrong_per_node=1, max_wrong_per_trace=2))[0]
    assert len(capped.wrong_positions) == 2
    at_s2 = [trace.node_ids[i] for i in capped.wrong_positions if trace.node_ids[i] != named["w1"].node_id]
    assert len(at_s2) <= 1


def test_journey_needs_at_least_min_wrong_detours():
    tree, labels, named = marble_tree()
    for key in ("w2", "w2b"):
        labels[named[key].node_id] = StepLabel(True, 0.5, 8, 4)  # now good siblings: no detour there
    assert mine([tree], labels, "journey", MineConfig(min_wrong_journey=2)) == []
    assert len(mine([tree], labels, "backtrack")) == 1


def test_trace_row_spans_match_text():
    tree, labels, _ = marble_tree()
    [trace] = mine([tree], labels, "journey")
    row = trace.row("r1")
    for s, e, i in zip(row["wrong_char_starts"], row["wrong_char_ends"], row["wrong_positions"], strict=True):
        assert row["text"][s:e] == row["segments"][i]


def test_reflection_uses_claim_feedback_when_a_source_supplies_it(monkeypatch):
    from search.traces import reflection

    monkeypatch.setitem(reflection.FEEDBACK, "arith",
                        lambda d, cfg, key: "48 / 3 = 16, not 14." if "14" in d.wrong_text else None)
    cfg = ReflectionConfig(openers=("Wait, let me check step {step}: ",),
                           returns=(' Going back to step {step}: "{anchor}"',))
    text = reflect(Detour(2, W2, bad(), S1), cfg, "k")
    assert text == 'Wait, let me check step 2: 48 / 3 = 16, not 14. Going back to step 1: "' + S1.strip() + '"\n\n'
    mc = reflect(Detour(2, W2B, bad(), S1), cfg, "k")
    assert "only 0 of 8 continuations" in mc or "0 of 8 attempts" in mc


def test_reflection_config_rejects_unknown_feedback_and_empty_lists():
    with pytest.raises(ValueError):
        ReflectionConfig(feedback=("oracle",))
    with pytest.raises(ValueError):
        ReflectionConfig(openers=())


def test_solutions_from_tree_finds_both_terminal_paths():
    tree, _, _ = marble_tree()
    sols = solutions_from_tree(tree)
    assert sorted(s.n_tokens for s in sols) == [30, 34]
