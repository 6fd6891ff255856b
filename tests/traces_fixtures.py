"""Hand-built labeled trees with exact truth, shared by the trace, format and filter tests."""

from __future__ import annotations

from search.traces.reflection import StepLabel
from search.tree import Node, Tree

S1 = "Tom has 3 bags of 16 marbles, so 3 * 16 = 48 marbles.\n\n"
S2 = "He gives away a third: 48 / 3 = 16.\n\n"
S3 = "So he keeps 48 - 16 = 32. The answer is 32.\n\n"
W1 = "Tom has 3 * 16 = 46 marbles.\n\n"  # wrong sibling of S1
W2 = "He gives away a third: 48 / 3 = 14.\n\n"  # wrong sibling of S2
W2B = "He gives away half: 48 / 2 = 24.\n\n"  # second wrong sibling of S2
LONG = "First, 16 + 16 + 16 = 48 marbles in total.\n\n"  # a longer correct first step


def good(n: int = 8, k: int = 6) -> StepLabel:
    return StepLabel(True, k / n, n, k)


def bad(n: int = 8) -> StepLabel:
    return StepLabel(False, 0.0, n, 0)


def terminal(node: Node, answer: str, correct: bool) -> Node:
    node.terminal, node.answer, node.outcome_correct = True, answer, correct
    return node


def marble_tree() -> tuple[Tree, dict[str, StepLabel], dict[str, Node]]:
    """Good path S1-S2-S3 (10+8+12 tokens), a longer good path LONG-S2-S3, wrong siblings W1, W2, W2B."""
    tree = Tree("p-marbles")
    s1, s2, s3 = tree.add_path([S1, S2, S3], [10, 8, 12])
    terminal(s3, "32", True)
    w1 = tree.add_child(tree.root, W1, 7)
    w2 = tree.add_child(s1, W2, 8)
    w2b = tree.add_child(s1, W2B, 8)
    l1, l2, l3 = tree.add_path([LONG, S2, S3], [14, 8, 12])
    terminal(l3, "32", True)
    labels = {n.node_id: good() for n in (s1, s2, s3, l1, l2, l3)}
    labels.update({n.node_id: bad() for n in (w1, w2, w2b)})
    named = {"s1": s1, "s2": s2, "s3": s3, "w1": w1, "w2": w2, "w2b": w2b, "l1": l1, "l3": l3}
    return tree, labels, named
