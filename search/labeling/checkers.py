"""Checkers that find a solution's wrong steps without rollouts, to bound the Monte Carlo search.

A checker maps a solution's step texts to the index of its first wrong step (-1: none found). The step it
names is labeled bad (``label_source = "arith"``), so a binary search only looks before it and linear
labeling takes no rollouts from it on. On the sim engine arithmetic slips are explicit in the text
("7 * 2 = 15"); logic errors (a wrong operation, computed right) are not, and are left to the rollouts.

Tool steps need no option: every step whose code call failed or whose stated result disagrees with the
output (``search.tools.tool_error``) is bad by that evidence (``label_source = "tool"``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from search.tools import tool_error
from search.tree import Node
from verifier.arith_claims import first_error_by_claims

CHECKERS: dict[str, Callable[[Sequence[str]], int]] = {"arith": first_error_by_claims}


TOOL = "tool"  # label_source of a step its own code call refutes


def flag_steps(paths: list[list[Node]], checker: str) -> dict[str, str]:
    """Steps found wrong without rollouts -> the label source that says so: each path's first step the
    named checker rejects ("none": no checker), and every step its tool call refutes (that wins)."""
    flagged: dict[str, str] = {}
    if checker != "none":
        check = CHECKERS[checker]
        for path in paths:
            index = check([node.text for node in path])
            if index >= 0:
                flagged[path[index].node_id] = checker
    for path in paths:
        for node in path:
            if tool_error(node.text, node.tool) is not None:
                flagged[node.node_id] = TOOL
    return flagged
