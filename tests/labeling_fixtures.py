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
from search.problems import Problem

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
