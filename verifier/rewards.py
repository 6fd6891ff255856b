"""Reward functions with TRL's ``GRPOTrainer`` signature: ``f(prompts, completions, **kwargs) -> list[float]``.

TRL passes every dataset column as a keyword list aligned with ``completions``; gold answers come in through
the ``answer`` column. Completions are strings (standard datasets) or lists of message dicts
(conversational ones); both are accepted.

Groups for the length reward are identified **by prompt**: GRPO samples ``num_generations`` completions per
prompt and TRL repeats the prompt for each, so equal prompts (compared as text, or as their messages) form
one group wherever they sit in the batch. This does not rely on groups being consecutive.

Example::

    >>> from trl import GRPOTrainer  # doctest: +SKIP
    >>> GRPOTrainer(model, reward_funcs=[format_reward, accuracy_reward, length_reward], ...)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from verifier import answers

RewardFn = Callable[..., list[float]]
Judge = Callable[[str, str], bool]  # (completion text, gold answer) -> correct
Extract = Callable[[str], Any]  # completion text -> answer or None


# Extractors of ``verifier.answers`` that need an answer marker in the text: a ``\\boxed{}``, "the answer is",
# "final answer:" or ``#### ``. Its fallback ``last_number`` is left out: any text ending in a number is not a
# stated answer ("room 101 is nice").
EXPLICIT_METHODS = frozenset({"boxed", "answer_is", "gsm8k"})
MAX_PROSE_WORDS = 1  # a stated answer with no digit or math symbol may be one word ("Monday", "B"), not a phrase
_MATH_CHARS = re.compile(r"[\d\\^_{}=+*/()\[\]<>|-]")


def explicit_answer(text: str) -> str | None:
    """The final answer when the completion states it explicitly, else None.

    It is the answer ``answers.judge`` (so the accuracy reward) reads, kept only when ``answers`` found it through
    a marker (``EXPLICIT_METHODS``) and it is not prose: "The answer is not clear." states nothing.

    >>> explicit_answer("The answer is 12."), explicit_answer("room 101 is nice")
    ('12', None)
    """
    try:
        answer, method = answers.extract_with_method(text)
    except Exception:  # noqa: BLE001 - never raise on model output
        return None
    if answer is None or method not in EXPLICIT_METHODS:
        return None
    if _MATH_CHARS.search(answer) is None and len(answer.split()) > MAX_PROSE_WORDS:
        return None
    return answer


def _correct(text: str, gold: str) -> bool:
    return answers.judge(text, gold).correct


def completion_text(completion: str | list[dict[str, str]]) -> str:
    """The assistant's text: the string itself, or the content of the messages of a conversational one."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content", "") for m in completion if m.get("role", "assistant") == "assistant")


def prompt_key(prompt: str | list[dict[str, str]]) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)


def _named(fn: RewardFn, name: str) -> RewardFn:
    fn.__name__ = name  # TRL logs each reward under its function's name
    return fn


def make_format_reward(extract: Extract | None = None) -> RewardFn:
    """1.0 when the completion states a final answer (``extract``, by default ``explicit_answer``), else 0.0."""
    def format_reward(prompts: list, completions: list, **kwargs: Any) -> list[float]:
        get = extract or explicit_answer
        return [float(get(completion_text(c)) is not None) for c in completions]
    return _named(format_reward, "format_reward")


def make_accuracy_reward(judge: Judge | None = None, answer_column: str = "answer") -> RewardFn:
    """1.0 when the completion's answer matches the gold answer of its row (``answer_column``)."""
    def accuracy_reward(prompts: list, completions: list, **kwargs: Any) -> list[float]:
        check = judge or _correct
        golds = kwargs[answer_column]
        return [float(check(completion_text(c), str(g))) for c, g in zip(completions, golds, strict=True)]
    return _named(accuracy_reward, "accuracy_reward")


@dataclass(frozen=True)
class LengthRewardConfig:
    only_correct: bool = True  # reward brevity only in correct answers (needs the answer column)
    unit: str = "words"  # words | chars: how a completion's length is counted
    answer_column: str = "answer"

    def __post_init__(self) -> None:
        if self.unit not in LENGTH_UNITS:
            raise ValueError(f"unit must be one of {sorted(LENGTH_UNITS)}")


LENGTH_UNITS: dict[str, Callable[[str], int]] = {"words": lambda t: len(t.split()), "chars": len}


def make_length_reward(cfg: LengthRewardConfig | None = None, judge: Judge | None = None) -> RewardFn:
    """``(mean - length) / mean`` for completions shorter than their group's mean length; 0 otherwise.

    A group is every completion of the same prompt in the batch. With ``only_correct``, wrong completions
    get 0 (a short wrong answer must not be encouraged) though they still count towards the mean.
    """
    cfg = cfg or LengthRewardConfig()
    measure = LENGTH_UNITS[cfg.unit]

    def length_reward(prompts: list, completions: list, **kwargs: Any) -> list[float]:
        texts = [completion_text(c) for c in completions]
        lengths = [measure(t) for t in texts]
        groups: dict[str, list[int]] = {}
        for i, p in enumerate(prompts):
            groups.setdefault(prompt_key(p), []).append(i)
        ok = [True] * len(texts)
        if cfg.only_correct:
            check = judge or _correct
            ok = [check(t, str(g)) for t, g in zip(texts, kwargs[cfg.answer_column], strict=True)]
        out = [0.0] * len(texts)
        for members in groups.values():
            mean = sum(lengths[i] for i in members) / len(members)
            for i in members:
                if ok[i] and lengths[i] < mean:
                    out[i] = (mean - lengths[i]) / mean
        return out
    return _named(length_reward, "length_reward")


REWARDS: dict[str, Callable[[], RewardFn]] = {
    "format": make_format_reward,
    "accuracy": make_accuracy_reward,
    "length": make_length_reward,
}

format_reward = make_format_reward()
accuracy_reward = make_accuracy_reward()
length_reward = make_length_reward()
