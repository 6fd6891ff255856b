"""Tool-integrated steps: the text format of a code call, reading it back, and judging a step by its output.

A code-interpreter model writes a fenced block and stops at its closing fence; the driver runs the code and
appends the output as an observation block, and the model goes on (``search/tool_loop.py``)::

    She buys 7 more.
    ```python
    total = 24
    print(total + 7)
    ```
    ```output
    31
    ```
    So 24 + 7 = 31.

The observation is the only text a driver adds; its content never holds a fence ("```" is written as
"'''"), so the stored text parses back exactly into calls (``tool_turns``). A step holds at most one call:
steps split at the delimiter outside fenced blocks, never between a block and its output or right after the
output, and again before a second ``python`` block. A step is *tool-bad* when its call did not run cleanly
(sandbox verdict not "ok") or when the result it states after the output (the number after the last "=",
"is", "equals", "gives" or in ``\\boxed{}``) matches no number the output printed; a step that states no
number is not judged (conservative: a tool-bad label must be right).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from cluster.problems.steps import split_steps
from search.tree import ToolCall

CODE_OPEN = "```python\n"
FENCE = "```"
STOP = "```\n"  # the stop string: generation ends at a code block's closing fence
OUTPUT_OPEN = "```output\n"
TRUNCATED = "\n...[truncated]"

_REGION_RE = re.compile(r"```python\n.*?```\n```output\n.*?```|```.*?```", re.S)
_CALL_RE = re.compile(r"```python\n(?P<code>.*?)```\n```output\n(?P<out>.*?)```\n?", re.S)
_NUMBER = r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?"
_NUMBER_RE = re.compile(_NUMBER)
_STATED_RE = re.compile(r"(?:=|\bis\b|\bequals\b|\bgives\b|\\boxed\{)\s*\$?\s*(" + _NUMBER + ")", re.I)


@dataclass(frozen=True)
class ToolConfig:
    """The python tool: off by default; its caps go to ``verifier.sandbox.run_python``."""

    python: bool = False  # run fenced ```python blocks and continue after their output
    timeout_s: float = 5.0  # wall clock per call
    cpu_s: float = 2.0  # CPU seconds per call
    memory_mb: int = 512  # address space per call
    max_calls: int = 8  # code calls per solution or rollout; the sample ends ("length") at the cap
    max_output_chars: int = 1000  # observation text kept per call (longer output is cut, marked)
    workers: int = 2  # sandbox processes run at once by the driver

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.cpu_s <= 0 or self.memory_mb < 16:
            raise ValueError("tools: need timeout_s > 0, cpu_s > 0 and memory_mb >= 16")
        if self.max_calls < 1 or self.max_output_chars < 1 or self.workers < 1:
            raise ValueError("tools: max_calls, max_output_chars and workers must be >= 1")


def trailing_code(text: str) -> str | None:
    """The code of the ```python block ``text`` ends with (its closing fence last), else None."""
    body = text[:-1] if text.endswith("\n") else text
    if not body.endswith(FENCE):
        return None
    start = body.rfind(CODE_OPEN)
    if start < 0:
        return None
    code = body[start + len(CODE_OPEN):-len(FENCE)]
    return None if FENCE in code else code


def observation(call: ToolCall, text: str) -> str:
    """The block appended after ``text`` (which ends with a code block) to show ``call``'s output."""
    body = call.output + "\n" if call.output else ""
    return ("" if text.endswith("\n") else "\n") + OUTPUT_OPEN + body + FENCE + "\n"


def output_text(verdict: str, stdout: str, stderr: str, max_chars: int) -> str:
    """What an observation shows: stdout, then for a failed call its error line (or the verdict)."""
    out = stdout.rstrip("\n")
    if verdict != "ok":
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        reason = lines[-1] if verdict == "error" and lines else f"sandbox: {verdict}"
        out = f"{out}\n{reason}" if out else reason
    out = out.replace(FENCE, "'''")
    return out if len(out) <= max_chars else out[:max_chars] + TRUNCATED


def split_tool_steps(text: str, delimiter: str) -> list[str]:
    """``split_steps`` that never cuts a fenced block, a block from its output, or the output from what follows;
    a second ```python block starts a new step. ``"".join(steps) == text``."""
    masked = list(text)
    for m in _REGION_RE.finditer(text):
        end = m.end()
        if text.startswith(OUTPUT_OPEN, m.start()) or m.group().startswith(CODE_OPEN):
            while end < len(text) and text[end].isspace():  # keep the statement after the output in the step
                end += 1
        masked[m.start():end] = "\x00" * (end - m.start())
    steps, pos = [], 0
    for piece in split_steps("".join(masked), delimiter):
        step = text[pos:pos + len(piece)]
        pos += len(piece)
        opens = [m.start() for m in re.finditer(re.escape(CODE_OPEN), step)]
        cuts = [0, *opens[1:], len(step)]
        steps += [step[a:b] for a, b in zip(cuts, cuts[1:], strict=False) if a < b]
    return steps


def assign_calls(steps: list[str], calls: list[tuple[int, ToolCall]]) -> list[ToolCall | None]:
    """Each step's call, from ``(end offset of its output in the joined text, call)`` pairs."""
    out: list[ToolCall | None] = [None] * len(steps)
    start = 0
    bounds = []
    for step in steps:
        bounds.append((start, start + len(step)))
        start += len(step)
    for end, call in calls:
        for i, (a, b) in enumerate(bounds):
            if a < end <= b:
                out[i] = call
                break
    return out


def stated_result(step: str) -> str | None:
    """The number a tool step states after its output block (None if it states none, or has no output)."""
    at = step.rfind(OUTPUT_OPEN)
    if at < 0:
        return None
    close = step.find(FENCE, at + len(OUTPUT_OPEN))
    if close < 0:
        return None
    matches = _STATED_RE.findall(step[close + len(FENCE):])
    return matches[-1] if matches else None


def _number(text: str) -> Fraction | None:
    try:
        return Fraction(text.replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


def agrees(stated: str, output: str) -> bool:
    """Whether the stated number equals some number in the output (rounded to the stated decimals)."""
    claim = _number(stated)
    if claim is None:
        return True  # nothing comparable: not judged
    decimals = len(stated.split(".")[1]) if "." in stated and "/" not in stated else 0
    printed = [v for v in (_number(t) for t in _NUMBER_RE.findall(output)) if v is not None]
    if not printed:
        return True
    return any(v == claim or round(float(v), decimals) == float(claim) for v in printed)


def tool_error(step: str, call: ToolCall | None) -> str | None:
    """Why ``step`` is tool-bad ("tool failed: ..." or "stated X, output Y"), or None."""
    if call is None:
        return None
    if call.verdict != "ok":
        return f"tool failed: {call.verdict}"
    stated = stated_result(step)
    if stated is not None and not agrees(stated, call.output):
        return f"stated {stated}, output {call.output!r}"
    return None


def tool_turns(text: str) -> list[dict[str, str]]:
    """``text`` as chat turns: assistant text up to each code block's fence, the output as a ``tool`` message.

    A text without calls is one assistant message. The ``tool`` role is what Hugging Face chat templates
    render for tool results (Qwen2.5, Llama 3.x, SmolLM's ChatML); the code stays in the assistant content as
    the model wrote it, so the messages keep the plain ``{role, content}`` schema.
    """
    turns: list[dict[str, str]] = []
    pos = 0
    for m in _CALL_RE.finditer(text):
        code_end = m.start("out") - len(OUTPUT_OPEN)
        turns.append({"role": "assistant", "content": text[pos:code_end].rstrip("\n")})
        turns.append({"role": "tool", "content": m.group("out").rstrip("\n")})
        pos = m.end()
    rest = text[pos:]
    if rest.strip() or not turns:
        turns.append({"role": "assistant", "content": rest})
    return turns
