"""GRPO reward functions: exact values on hand-made batches, strings and conversational completions."""

from __future__ import annotations

import re

import pytest

from verifier import answers
from verifier.rewards import (
    LengthRewardConfig,
    accuracy_reward,
    completion_text,
    explicit_answer,
    format_reward,
    make_accuracy_reward,
    make_format_reward,
    make_length_reward,
)


def _extract(text: str) -> str | None:
    m = re.search(r"The answer is (-?\d+)", text)
    return m[1] if m else None


def _judge(text: str, gold: str) -> bool:
    return _extract(text) == gold


def test_completion_text_accepts_strings_and_message_lists():
    assert completion_text("x") == "x"
    assert completion_text([{"role": "assistant", "content": "The answer is 3."}]) == "The answer is 3."


def test_format_reward_is_one_only_with_an_extractable_answer():
    fmt = make_format_reward(_extract)
    assert fmt(["q", "q"], ["so The answer is 4.", "no idea"]) == [1.0, 0.0]
    assert fmt.__name__ == "format_reward"


def test_accuracy_reward_reads_gold_from_the_answer_column():
    acc = make_accuracy_reward(_judge)
    comps = ["The answer is 4.", [{"role": "assistant", "content": "The answer is 5."}], "The answer is 7."]
    assert acc(["q1", "q1", "q2"], comps, answer=["4", "4", "7"]) == [1.0, 0.0, 1.0]


def test_length_reward_groups_by_prompt_and_rewards_only_shorter_than_mean():
    length = make_length_reward(LengthRewardConfig(only_correct=False), _judge)
    prompts = ["A", "B", "A", "B"]  # interleaved: groups are found by prompt, not by position
    comps = ["w " * 2, "w " * 10, "w " * 6, "w " * 10]
    # group A: lengths 2 and 6, mean 4 -> (4-2)/4 = 0.5 and 0; group B: all equal to the mean -> 0
    assert length(prompts, comps) == [0.5, 0.0, 0.0, 0.0]


def test_length_reward_gives_nothing_to_short_wrong_answers():
    length = make_length_reward(LengthRewardConfig(unit="words"), _judge)
    prompts = [[{"role": "user", "content": "q"}]] * 3
    comps = ["The answer is 9.", "Let me think a lot more. The answer is 4.", "The answer is 4."]
    # lengths 4, 10, 4 -> mean 6; the first is short but wrong, the third short and right: (6-4)/6
    assert length(prompts, comps, answer=["4", "4", "4"]) == pytest.approx([0.0, 0.0, 1 / 3])


def test_length_config_rejects_unknown_unit():
    with pytest.raises(ValueError):
        LengthRewardConfig(unit="tokens")


def test_default_accuracy_reward_uses_verifier_answers():
    good = "2 + 2 = 4.\n\nThe answer is \\boxed{4}."
    assert accuracy_reward(["q", "q"], [good, "The answer is \\boxed{5}."], answer=["4", "4"]) == [1.0, 0.0]


def _chat(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


FORMAT_CASES = [
    # a stated final answer: boxed, "the answer is", "final answer:", "####"
    ("The answer is 12.", 1.0),
    ("\\boxed{3/4}", 1.0),
    ("Half of 8 is 4, so we get $\\boxed{\\frac{1}{2}}$.", 1.0),
    ("The final answer is $\\boxed{5}$. I hope it is correct.", 1.0),
    ("Final answer: 7", 1.0),
    ("She sold 48 + 24 = 72 clips.\n#### 72", 1.0),
    ("So the answer is 12 apples.", 1.0),
    ("The answer is \\(\\frac{1}{2}\\).", 1.0),
    ("The answer is B.", 1.0),  # one word: a multiple-choice letter or a name is an answer
    (_chat("3 + 4 = 7.\n\nThe answer is 7."), 1.0),
    ([{"role": "assistant", "content": "3 + 4 = 7.\n\n"}, {"role": "assistant", "content": "#### 7"}], 1.0),
    # text that merely ends in (or contains) a number
    ("room 101 is nice", 0.0),
    ("3 + 4 = 7", 0.0),
    ("I think 3 then 4 then -12.5", 0.0),
    (_chat("We have 5 apples and 3 pears, 8 in all"), 0.0),
    # a marker with nothing stated after it
    ("I'm not sure what the answer is.", 0.0),
    ("\\boxed{}", 0.0),
    ("The answer is not clear yet.", 0.0),  # prose after the phrase states no answer
    (_chat("Let me think. The final answer is that we need more data."), 0.0),
    ("", 0.0),
    ([], 0.0),
]


@pytest.mark.parametrize(("completion", "expected"), FORMAT_CASES)
def test_format_reward_needs_an_explicitly_stated_final_answer(completion, expected):
    assert format_reward(["q"], [completion]) == [expected]


def test_format_reward_scores_the_answer_accuracy_reads():
    """When the format reward passes, the accuracy reward judges that same answer (no second extractor)."""
    for completion, expected in FORMAT_CASES:
        text = completion_text(completion)
        if expected:
            assert explicit_answer(text) == answers.judge(text, "0").answer
