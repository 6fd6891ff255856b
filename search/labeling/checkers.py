"""Checkers that find a solution's first wrong step without rollouts, to bound the Monte Carlo search.

A checker maps a solution's step texts to the index of its first wrong step (-1: none found). The step it
names is labeled bad (``label_source = "arith"``), so a binary search only looks before it and linear
labeling takes no rollouts from it on. On the sim engine arithmetic slips are explicit in the text
("7 * 2 = 15"); logic errors (a wrong operation, computed right) are not, and are left to the rollouts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from search.tree import Node
from verifier.arith_claims import first_error_by_claims

CHECKERS: dict[str, Callable[[Sequence[str]], int]] = {"arith": first_error_by_claims}


def flag_steps(paths: list[list[Node]], checker: str) -> set[str]:
    """Ids of the steps the named checker finds wrong (each path's first); "none" flags nothing."""
    if checker == "none":
        return set()
    check = CHECKERS[checker]
    flagged = set()
    for path in paths:
        index = check([node.text for node in path])
        if index >= 0:
            flagged.add(path[index].node_id)
    return flagged
