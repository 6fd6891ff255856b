"""LLM judge: ask a model for a solution's earliest wrong step, ProcessBench's critic prompt and answer format.

The judge is a program like the search strategies (it yields ``GenRequest``s and gets ``GenResult``s back),
so judging many solutions batches through whichever engine drives it. It samples ``n`` critiques and takes
the most common parsable verdict; an unparsable answer is no vote, and no votes at all gives None.

Example::

    >>> from search.program import run_program  # doctest: +SKIP
    >>> prog = judge_program(question, steps, engine.apply_chat_template, JudgeConfig())  # doctest: +SKIP
    >>> run_program(prog, engine.generate)  # doctest: +SKIP
    2
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

from cluster.engine import GenRequest, GenResult, request_key, seed_for

# The critic prompt of ProcessBench (Zheng et al., 2024), with paragraphs tagged and indexed from 0.
JUDGE_TEMPLATE = (
    "The following is a math problem and a solution (split into paragraphs, enclosed with tags and indexed "
    "from 0):\n\n[Math Problem]\n\n{problem}\n\n[Solution]\n\n{tagged}\n\nYour task is to review and critique "
    "the solution paragraph by paragraph. Once you identify an error in a paragraph, return the index of the "
    "paragraph where the earliest error occurs. Otherwise, return the index of -1 (which typically denotes "
    '"not found").\n\nPlease put your final answer (i.e., the index) in \\boxed{{}}.'
)
PARAGRAPH = "<paragraph_{i}>\n{text}\n</paragraph_{i}>"
_BOXED = re.compile(r"\\boxed\{\s*(-?\d+)\s*\}")

TemplateFn = Callable[[list[dict[str, str]]], str]
JudgeProgram = Generator[list[GenRequest], list[GenResult], int | None]


@dataclass(frozen=True)
class JudgeConfig:
    n: int = 1  # critiques sampled; the most common verdict wins
    max_new_tokens: int = 1024  # a critique walks through every paragraph
    temperature: float = 0.0  # greedy by default; raise it with n > 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_new_tokens < 1 or self.temperature < 0:
            raise ValueError("need n >= 1, max_new_tokens >= 1, temperature >= 0")


def judge_messages(question: str, steps: Sequence[str]) -> list[dict[str, str]]:
    tagged = "\n\n".join(PARAGRAPH.format(i=i, text=s.strip()) for i, s in enumerate(steps))
    return [{"role": "user", "content": JUDGE_TEMPLATE.format(problem=question.strip(), tagged=tagged)}]


def parse_verdict(text: str, n_steps: int) -> int | None:
    """The last boxed index, if it is -1 or a valid step index; None otherwise."""
    found = _BOXED.findall(text)
    if not found:
        return None
    index = int(found[-1])
    return index if -1 <= index < n_steps else None


def judge_program(question: str, steps: Sequence[str], template_fn: TemplateFn, cfg: JudgeConfig,
                  group: str = "") -> JudgeProgram:
    """Yield one request for ``cfg.n`` critiques; return the majority earliest-error index (or None)."""
    prompt = template_fn(judge_messages(question, steps))
    key = request_key("judge", prompt, cfg.seed)
    (result,) = yield [GenRequest(key, prompt, "", cfg.n, cfg.max_new_tokens, (), cfg.temperature,
                                  seed=seed_for(key, cfg.seed), group=group)]
    votes = Counter(v for s in result.samples if (v := parse_verdict(s.text, len(steps))) is not None)
    return votes.most_common(1)[0][0] if votes else None
