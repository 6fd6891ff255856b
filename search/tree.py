"""The search tree shared by every strategy: nodes are step prefixes, rollouts hang off nodes.

A node's ``text`` is one step (including its trailing delimiter, so concatenating the steps of a path gives
back exactly the text the engine produced: ``cluster.problems.steps.split_steps`` cuts solutions into such
steps); ``prefix`` of a node is the concatenation along its path.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


def node_id(parent_id: str, text: str) -> str:
    """Hash of parent id + step text: the same step under the same prefix is the same node."""
    return hashlib.sha256(f"{parent_id}\x1f{text}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ToolCall:
    """One executed code block of a step (``search/tools.py``): the code, what its output block shows, and
    the sandbox verdict (``verifier.sandbox.VERDICTS``: "ok", "error", "timeout", ...)."""

    code: str
    output: str
    verdict: str


@dataclass
class Rollout:
    request_key: str
    node_id: str
    index: int  # rollout index at this node
    text: str  # continuation after the node's prefix
    n_tokens: int
    finish_reason: str
    answer: str | None
    correct: bool


@dataclass
class Node:
    node_id: str
    parent_id: str  # "" for the root (the question itself, empty prefix)
    problem_id: str
    depth: int  # root is 0; the first step is depth 1
    text: str  # this step's text (empty for the root)
    prefix: str  # the whole assistant prefix up to and including this step
    n_tokens: int = 0  # tokens of this step
    terminal: bool = False  # the step ends the solution
    answer: str | None = None  # extracted answer (terminal nodes)
    outcome_correct: bool | None = None  # terminal nodes: answer matches gold
    origin: str = "sample"  # "sample" (a sampled solution), "rollout" (mcts), "given" (input solution)
    tool: ToolCall | None = None  # the step's code call, where it made one
    children: list[str] = field(default_factory=list)
    rollouts: list[Rollout] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.rollouts)

    @property
    def n_correct(self) -> int:
        return sum(r.correct for r in self.rollouts)

    @property
    def value(self) -> float | None:
        """Monte Carlo value: the fraction of rollouts from here that reach the gold answer."""
        return self.n_correct / self.n if self.rollouts else None


class Tree:
    """All nodes of one problem, keyed by id; adding an existing step returns the existing node."""

    def __init__(self, problem_id: str):
        self.problem_id = problem_id
        self.root = Node(node_id("", problem_id), "", problem_id, 0, "", "", origin="root")
        self.nodes: dict[str, Node] = {self.root.node_id: self.root}

    def add_child(self, parent: Node, text: str, n_tokens: int = 0, origin: str = "sample",
                  tool: ToolCall | None = None) -> Node:
        nid = node_id(parent.node_id, text)
        node = self.nodes.get(nid)
        if node is None:
            node = Node(nid, parent.node_id, self.problem_id, parent.depth + 1, text, parent.prefix + text,
                        n_tokens=n_tokens, origin=origin, tool=tool)
            self.nodes[nid] = node
            parent.children.append(nid)
        return node

    def add_path(self, steps: list[str], step_tokens: list[int] | None = None,
                 origin: str = "sample", parent: Node | None = None,
                 tools: list[ToolCall | None] | None = None) -> list[Node]:
        """Insert a solution's steps under ``parent`` (default root); returns the path's nodes."""
        node, path = parent or self.root, []
        for i, step in enumerate(steps):
            node = self.add_child(node, step, step_tokens[i] if step_tokens else 0, origin,
                                  tools[i] if tools else None)
            path.append(node)
        return path

    def path_to(self, node: Node) -> list[Node]:
        """Nodes from the first step down to ``node`` (root excluded)."""
        path = []
        while node.parent_id:
            path.append(node)
            node = self.nodes[node.parent_id]
        return path[::-1]
