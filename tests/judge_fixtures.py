"""Engines that solve and judge, for the tests of the LLM judge of open prompts.

A prompt holding ProcessBench's critic template (``verifier.judge_llm``) is answered with a critique of the
tagged paragraphs; any other prompt is answered as the engine underneath would. ``JudgingSim`` is the sim with
a judge that is always right (``oracle_verdict``: ``\\boxed{i}``, ``i`` the exact first wrong paragraph by
``cluster.problems.arith.first_error``, -1 for none) or one that answers garbage (``garbage_verdict``: an index
no solution has, which ``parse_verdict`` cannot use). ``BadStepJudge`` is the labeling tests' fake engine with
a judge that finds the first paragraph holding "BAD".

``ORACLE_JUDGE`` and ``GARBAGE_JUDGE`` are backend names (``module:callable``) that Ray workers resolve by
import, so a run reaches them the way it reaches any engine (spec -> actor -> ``cluster.backends``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from cluster.engine import FINISH_EOS, GenRequest, GenResult, Sample
from cluster.problems.arith import first_error
from cluster.requests import make_result
from cluster.sim_engine import SimConfig, SimEngine
from tests.labeling_fixtures import FakeEngine
from verifier.judge_llm import JUDGE_TEMPLATE

ORACLE_JUDGE = "tests.judge_fixtures:oracle_judge_sim"
GARBAGE_JUDGE = "tests.judge_fixtures:garbage_judge_sim"
CRITIC_MARK = JUDGE_TEMPLATE.split("{problem}")[0]  # the critic prompt's fixed opening
_QUESTION = re.compile(r"\[Math Problem\]\n\n(.*?)\n\n\[Solution\]", re.S)
_PARAGRAPH = re.compile(r"<paragraph_(\d+)>\n(.*?)\n</paragraph_\1>", re.S)
DELIMITER = "\n\n"

Verdict = Callable[[str, list[str]], str]  # (question, paragraphs) -> the critique's text


def oracle_verdict(question: str, paragraphs: list[str]) -> str:
    return f"Checked every paragraph. \\boxed{{{first_error(question, DELIMITER.join(paragraphs), DELIMITER)}}}"


def garbage_verdict(question: str, paragraphs: list[str]) -> str:
    return f"The error is in paragraph \\boxed{{{len(paragraphs) + 7}}}, I think."


def critique(prompt: str, verdict: Verdict) -> str | None:
    """``verdict``'s critique if ``prompt`` is a critic prompt (None otherwise)."""
    if CRITIC_MARK not in prompt:
        return None
    question = _QUESTION.search(prompt)
    assert question is not None, "a critic prompt states its problem"
    return verdict(question.group(1), [m.group(2) for m in _PARAGRAPH.finditer(prompt)])


def _critique_result(req: GenRequest, text: str) -> GenResult:
    sample = Sample(text, list(range(len(text.split()))), FINISH_EOS)
    return make_result(req, [sample] * req.n, len(req.prompt.split()))


class JudgingSim(SimEngine):
    """The sim, except that critic prompts get ``verdict``'s critique (the same text for every sample)."""

    def __init__(self, config: SimConfig, verdict: Verdict) -> None:
        super().__init__(config)
        self._verdict = verdict

    def _one(self, req: GenRequest) -> GenResult:
        text = critique(req.prompt, self._verdict)
        return super()._one(req) if text is None else _critique_result(req, text)


def bad_step_verdict(question: str, paragraphs: list[str]) -> str:
    return f"\\boxed{{{next((i for i, p in enumerate(paragraphs) if 'BAD' in p), -1)}}}"


class BadStepJudge(FakeEngine):
    """``FakeEngine`` (solutions are fixed texts, "BAD" marks a wrong step), judging by ``bad_step_verdict``;
    ``batches`` holds each ``generate`` call's requests."""

    def __init__(self, solutions: list[str]) -> None:
        super().__init__(solutions)
        self.batches: list[list[GenRequest]] = []

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        self.batches.append(list(requests))
        return super().generate(requests)

    def _one(self, req: GenRequest) -> GenResult:
        text = critique(req.prompt, bad_step_verdict)
        return super()._one(req) if text is None else _critique_result(req, text)


def oracle_judge_sim(config: dict[str, Any]) -> JudgingSim:
    return JudgingSim(SimConfig(**config), oracle_verdict)


def garbage_judge_sim(config: dict[str, Any]) -> JudgingSim:
    return JudgingSim(SimConfig(**config), garbage_verdict)
