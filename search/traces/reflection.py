"""Reflection text for backtracking traces: what the model "says" after a wrong step before returning.

A reflection names the wrong step, gives the verifier's reason (a failed arithmetic claim, or the Monte Carlo
value of the step) and says where the solution resumes, so a trace reads as one line of thought:
``Wait, let me check step 3: 48 / 3 = 16, not 14. Going back to step 2: "So she has 48 marbles."``

Phrasings come from template lists in ``ReflectionConfig``; which template is used is a pure function of a
seed key, so re-mining the same tree with the same seed gives byte-identical traces.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from verifier.arith_claims import check_step


@dataclass(frozen=True)
class StepLabel:
    """The label of one node as mining sees it (one row of ``step_labels``)."""

    hard: bool  # Math-Shepherd HE: some continuation from here reached the answer
    soft: float | None = None  # MC value; None when the label did not come from rollouts
    n: int = 0  # rollouts behind the label
    n_correct: int = 0


@dataclass(frozen=True)
class Detour:
    """One wrong step inside a trace, with what a reflection needs to talk about it."""

    step_number: int  # 1-based position of the wrong step in the solution being written
    wrong_text: str
    label: StepLabel | None
    anchor_text: str | None  # the last good step the trace returns to; None when returning to the start


@dataclass(frozen=True)
class ReflectionConfig:
    """Template lists (``str.format`` fields in braces) and which feedback sources to try, in order."""

    openers: tuple[str, ...] = (
        "Wait, let me check step {step}: ",
        "Hmm, step {step} looks off: ",
        "Let me double-check step {step}: ",
        "Actually, step {step} is wrong: ",
    )
    claim_feedback: tuple[str, ...] = (  # fields: claim (the stated claim), correct (the true value)
        "{claim} is wrong, it should be {correct}.",
        "{claim} does not hold; the right value is {correct}.",
    )
    value_feedback: tuple[str, ...] = (  # fields: n_correct, n (MC rollouts from the wrong step)
        "only {n_correct} of {n} continuations from here reached the answer.",
        "when I continue from it, {n_correct} of {n} attempts end at the right answer.",
    )
    generic_feedback: tuple[str, ...] = ("this step does not lead to the right answer.",)
    returns: tuple[str, ...] = (  # fields: step (the step returned to), anchor (its text, shortened)
        ' Going back to step {step}: "{anchor}"',
        ' Let me return to step {step}, "{anchor}", and continue from there.',
    )
    restarts: tuple[str, ...] = (" Let me start over from the beginning.", " Let me redo this from the start.")
    feedback: tuple[str, ...] = ("arith", "mc")  # names in FEEDBACK, tried in order; generic if none applies
    anchor_chars: int = 80  # longer anchors are cut to their last sentence, then to this many characters
    delimiter: str = "\n\n"  # appended to every reflection so it is a step of its own

    def __post_init__(self) -> None:
        lists = (self.openers, self.claim_feedback, self.value_feedback, self.generic_feedback, self.returns,
                 self.restarts)
        if not all(lists):
            raise ValueError("every reflection template list needs at least one template")
        unknown = [name for name in self.feedback if name not in FEEDBACK]
        if unknown:
            raise ValueError(f"unknown feedback sources {unknown}; known: {sorted(FEEDBACK)}")
        if self.anchor_chars < 8:
            raise ValueError("anchor_chars must be at least 8")


def pick(templates: tuple[str, ...], key: str) -> str:
    """Deterministic choice: the same key always picks the same template (no global RNG)."""
    digest = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
    return templates[digest % len(templates)]


def _arith_feedback(detour: Detour, cfg: ReflectionConfig, key: str) -> str | None:
    """The first wrong arithmetic claim of the step, found by ``verifier.arith_claims``."""
    check = check_step(detour.wrong_text)
    if not check.wrong:
        return None
    claim = check.wrong[0]
    stated, correct = str(claim), claim.actual
    return pick(cfg.claim_feedback, key + ":claim").format(claim=stated.strip(), correct=_num(correct))


def _mc_feedback(detour: Detour, cfg: ReflectionConfig, key: str) -> str | None:
    """The Monte Carlo evidence: how many continuations from the wrong step reached the answer."""
    label = detour.label
    if label is None or label.n <= 0:
        return None
    return pick(cfg.value_feedback, key + ":mc").format(n_correct=label.n_correct, n=label.n)


FEEDBACK: dict[str, Callable[[Detour, ReflectionConfig, str], str | None]] = {
    "arith": _arith_feedback,
    "mc": _mc_feedback,
}


def _num(value: object) -> str:
    """Print integral floats without a trailing ``.0`` (claims are usually whole numbers)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def shorten(text: str, limit: int) -> str:
    """The last sentence of a step, cut to ``limit`` characters: enough to say where the trace resumes."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    sentences = [s for s in flat.replace("? ", ". ").replace("! ", ". ").split(". ") if s]
    last = sentences[-1] if sentences else flat
    return last if len(last) <= limit else "..." + last[-(limit - 3):]


def reflect(detour: Detour, cfg: ReflectionConfig, key: str) -> str:
    """The reflection step after ``detour``'s wrong step (ends with ``cfg.delimiter``)."""
    reason = next((text for name in cfg.feedback if (text := FEEDBACK[name](detour, cfg, key))), None)
    reason = reason or pick(cfg.generic_feedback, key + ":generic")
    opener = pick(cfg.openers, key + ":open").format(step=detour.step_number)
    if detour.anchor_text is None:
        back = pick(cfg.restarts, key + ":back")
    else:
        anchor = shorten(detour.anchor_text, cfg.anchor_chars)
        back = pick(cfg.returns, key + ":back").format(step=detour.step_number - 1, anchor=anchor)
    return opener + reason + back + cfg.delimiter
