"""Consensus labels (MC vs the arithmetic tool / an LLM judge) and the judge prompt program."""

from __future__ import annotations

import pyarrow as pa
import pytest

from cluster.engine import GenResult, Sample
from search.labeling.base import NodeLabel
from search.program import run_program
from search.tree import Tree
from storage.schemas import STEP_LABELS
from verifier.consensus import (
    ConsensusConfig,
    arith_votes,
    combine_first_errors,
    consensus_rows,
    decide,
    votes_from_first_error,
)
from verifier.judge_llm import JudgeConfig, judge_messages, judge_program, parse_verdict

STEPS = ["Mia buys 3 more: 4 + 3 = 7.\n\n", "She doubles 7: 7 * 2 = 15.\n\n", "The answer is 15."]


def _labeled(hard: list[bool]):
    tree = Tree("p1")
    path = tree.add_path(STEPS)
    labels = {n.node_id: NodeLabel(n.node_id, "linear", 4, 4 * h, float(h), h, float(h), "mc")
              for n, h in zip(path, hard, strict=True)}
    return path, labels


@pytest.mark.parametrize(("policy", "hard", "flagged_rows", "n_rows"), [
    ("keep", [True, True, False], 0, 3),  # MC wins, nothing flagged
    ("flag", [True, True, False], 1, 3),  # MC wins; step 1 (tool: bad, MC: good) is flagged
    ("drop", [True, False, False], 2, 2),  # step 1 disagrees and is dropped
    ("strict", [True, False, False], 0, 3),  # the tool's bad vote overrides MC's good one
])
def test_disagreement_policies(policy, hard, flagged_rows, n_rows):
    path, labels = _labeled([True, True, False])  # MC thinks step 1 is fine (a lucky rollout)
    rows = consensus_rows([path], labels, {"arith": [arith_votes(STEPS)]}, ConsensusConfig(policy), "r", "p1")
    assert len(rows) == n_rows
    assert all(r["label_source"].startswith("consensus:mc+arith") for r in rows)
    if policy != "drop":
        assert [r["hard"] for r in rows] == hard
        assert sum(r["label_source"].endswith(":flagged") for r in rows) == flagged_rows
    else:
        assert [r["node_id"] for r in rows] == [path[0].node_id, path[2].node_id]
    pa.Table.from_pylist(rows, schema=STEP_LABELS)  # rows fit the table


def test_strict_override_zeroes_the_soft_label():
    path, labels = _labeled([True, True, False])
    rows = consensus_rows([path], labels, {"arith": [arith_votes(STEPS)]}, ConsensusConfig("strict"), "r", "p1")
    assert [r["soft"] for r in rows] == [1.0, 0.0, 0.0]


def test_arith_votes_good_until_the_first_wrong_claim():
    assert arith_votes(STEPS) == [True, False, False]


def test_votes_from_first_error():
    assert votes_from_first_error(-1, 3) == [True, True, True]
    assert votes_from_first_error(1, 3) == [True, False, False]
    assert votes_from_first_error(None, 2) == [None, None]


def test_a_voter_without_opinion_does_not_count():
    d = decide(True, {"arith": None, "judge": True}, "flag")
    assert d.sources == ("mc", "judge") and d.agree and not d.flagged
    assert decide(None, {"arith": False}, "keep") is None


def test_combine_first_errors():
    assert combine_first_errors(2, {"arith": 1}, 4, "keep") == 2
    assert combine_first_errors(2, {"arith": 1}, 4, "strict") == 1
    assert combine_first_errors(2, {"arith": 1}, 4, "drop") is None  # step 1 undecided comes first
    assert combine_first_errors(-1, {"arith": -1}, 4, "drop") == -1


def test_unknown_policy_is_an_error():
    with pytest.raises(ValueError, match="policy"):
        ConsensusConfig("vote")


# ---------------------------------------------------------------- LLM judge


def test_judge_prompt_tags_paragraphs_from_zero():
    content = judge_messages("What is 4+3?", ["4 + 3 = 7.", "The answer is 7."])[0]["content"]
    assert "<paragraph_0>\n4 + 3 = 7.\n</paragraph_0>" in content and "<paragraph_1>" in content
    assert "\\boxed{}" in content


@pytest.mark.parametrize(("text", "expected"), [
    ("... so the earliest error is \\boxed{1}", 1), ("\\boxed{-1}", -1), ("\\boxed{2} no wait \\boxed{0}", 0),
    ("\\boxed{7}", None), ("no verdict", None),
])
def test_parse_verdict(text, expected):
    assert parse_verdict(text, 3) == expected


def test_judge_program_takes_the_majority_verdict():
    texts = ["\\boxed{1}", "\\boxed{1}", "\\boxed{-1}", "garbage"]

    def generate(reqs):
        (req,) = reqs
        assert req.n == 4 and "[Math Problem]" in req.prompt
        return [GenResult(req.request_key, [Sample(t, [], "eos") for t in texts], 0, 0)]

    prog = judge_program("Q?", STEPS, lambda m: m[0]["content"], JudgeConfig(n=4, temperature=0.7))
    assert run_program(prog, generate) == 1
