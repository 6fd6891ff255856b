"""A tiny deterministic engine whose Monte Carlo truth is known, for labeling tests.

Solutions are fixed texts; a step containing "BAD" is wrong. A rollout from a prefix reaches the gold
answer iff the prefix holds no "BAD" step and a per-sample coin (``p_success``, drawn from the request seed
and sample index) comes up; so a good prefix with p_success = 1 always succeeds and a bad one never does.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from cluster.engine import GenRequest, GenResult, Sample
from cluster.problems.problem import Problem

GOLD = "42"
_ANSWER = re.compile(r"The answer is (-?\d+)\.")


@dataclass
class Verdict:
    answer: str | None
    correct: bool


def judge(text: str, gold: str) -> Verdict:
    found = _ANSWER.findall(text)
    answer = found[-1] if found else None
    return Verdict(answer, answer == gold)


def solution_text(n_steps: int, bad_at: int | None = None) -> str:
    """``n_steps`` steps then the answer step; the answer is right iff no step is bad."""
    steps = [f"step {i}{' BAD' if i == bad_at else ''}" for i in range(n_steps)]
    answer = GOLD if bad_at is None else "0"
    return "\n\n".join(steps + [f"The answer is {answer}."])


class FakeEngine:
    def __init__(self, solutions: list[str], p_success: float = 1.0):
        self.solutions, self.p_success = solutions, p_success
        self.requests: list[GenRequest] = []

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str:
        return "".join(f"[{m['role']}] {m['content']}\n" for m in messages) + "[assistant]"

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        self.requests += requests
        return [self._one(req) for req in requests]

    def _one(self, req: GenRequest) -> GenResult:
        samples = []
        for i in range(req.n):
            if not req.prefix:
                text = self.solutions[i % len(self.solutions)]
            else:
                ok = "BAD" not in req.prefix and random.Random(req.seed + i).random() < self.p_success
                text = f"more work\n\nThe answer is {GOLD if ok else '0'}."
            samples.append(Sample(text, list(range(len(text.split()))), "eos"))
        return GenResult(req.request_key, samples, 0, sum(len(s.token_ids) for s in samples))


def problem() -> Problem:
    return Problem.make("What is six times seven?", GOLD, "test")


SOURCES = {"mc", "mc-threshold", "mc-drop", "outcome", "inferred", "override", "arith"}


def assert_label_invariants(result, tree, paths) -> None:
    """The checks ``tracemill validate`` makes on step_labels rows, plus first errors matching the labels."""
    for lab in result.labels.values():
        node = tree.nodes[lab.node_id]
        assert lab.label_source in SOURCES
        assert (lab.n, lab.n_correct) == (node.n, node.n_correct)
        if lab.n >= 1 and lab.n_correct == 0:
            assert not lab.hard or lab.label_source == "override"
        if lab.label_source == "mc":
            assert lab.hard == (lab.n_correct > 0)
        if lab.label_source == "override":
            assert lab.hard and lab.n >= 1 and lab.n_correct == 0
        if lab.label_source in ("mc", "mc-threshold", "mc-drop", "override"):
            assert lab.n >= 1 and lab.soft == lab.value == lab.n_correct / lab.n
        if lab.label_source == "inferred":
            assert lab.n == 0 and lab.hard and lab.soft is None
        if lab.label_source == "outcome":
            assert node.terminal and lab.soft == lab.value == float(bool(node.outcome_correct))
        if lab.soft is None:
            assert lab.n == 0 and not node.terminal
    for path, err in zip(paths, result.first_errors, strict=True):
        hards = [result.labels[n.node_id].hard if n.node_id in result.labels else None for n in path]
        if err is not None and err >= 0:
            assert hards[err] is False and all(h is True for h in hards[:err])
        if err == -1:
            assert all(h is True for h in hards)
        if err is None:
            first_open = next(i for i, h in enumerate(hards) if h is not True)
            assert hards[first_open] is None
