"""The one step splitter: a solution is cut into steps at the step delimiter (``sampling.delimiter``).

Every stage that needs steps cuts them here: the search tree (one node per step), the sim engine and the
arith ground truth (which step is wrong), mining's reflections and near-duplicate shingles, the PRM export.
It sits with the problems, at the bottom of the import graph, so the sim engine (``cluster/``) and search
share it; a second splitter could number steps differently and shift every first-error index.

Example::

    >>> split_steps("a: 1 + 1 = 2.\\n\\nThe answer is 2.")
    ['a: 1 + 1 = 2.\\n\\n', 'The answer is 2.']
    >>> step_texts("a\\n\\n\\n\\nb\\n\\n")
    ['a', 'b']
"""

from __future__ import annotations

DEFAULT_DELIMITER = "\n\n"  # a blank line, the usual paragraph break of chat models


def split_steps(text: str, delimiter: str = DEFAULT_DELIMITER) -> list[str]:
    """Split a solution into steps, each keeping its trailing delimiter; ``"".join(steps) == text``.

    Runs of delimiters stay attached to the step before them, so no step is empty or whitespace only.
    """
    if not text:
        return []
    steps: list[str] = []
    start, pos = 0, 0
    while True:
        hit = text.find(delimiter, pos)
        if hit < 0:
            break
        end = hit + len(delimiter)
        while text.startswith(delimiter, end):  # swallow repeated delimiters
            end += len(delimiter)
        if text[start:hit].strip():
            steps.append(text[start:end])
            start = end
        pos = end
    if text[start:]:
        if text[start:].strip() or not steps:
            steps.append(text[start:])
        else:
            steps[-1] += text[start:]
    return steps


def step_texts(text: str, delimiter: str = DEFAULT_DELIMITER) -> list[str]:
    """The steps of ``split_steps`` without their delimiters and surrounding blanks (for parsing a step)."""
    return [delimiter.join(p for p in step.split(delimiter) if p.strip()).strip()
            for step in split_steps(text, delimiter)]
