"""Mining traces from labeled search trees: shortest correct, backtrack (one detour), journey (several).

A backtracking trace is a linearized DFS over the tree: the good prefix, then a sibling step labeled bad, a
reflection carrying the verifier's feedback, a return to the last good step, and the correct continuation.
Every trace keeps the node ids it was built from and where its wrong steps are (segment index and character
span), so tests and users can check exactly what a trace claims.

Everything here works on ``search.tree.Tree`` plus a ``node_id -> StepLabel`` dict, so it runs on trees
built by hand in tests as well as on trees rebuilt from stored tables (``pipelines/mine.py``).
"""

from __future__ import annotations

import hashlib
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from cluster.engine import request_key
from search.traces.reflection import Detour, ReflectionConfig, StepLabel, reflect
from search.tree import Node, Tree

Labels = dict[str, StepLabel]
MODES = ("verified", "answer-only")


@dataclass(frozen=True)
class Solution:
    """One root-to-leaf path with its outcome (a row of ``solutions`` joined to its nodes)."""

    solution_id: str
    problem_id: str
    node_ids: tuple[str, ...]
    steps: tuple[str, ...]
    n_tokens: int
    answer: str | None
    correct: bool

    @property
    def text(self) -> str:
        return "".join(self.steps)


@dataclass
class Trace:
    """A mined trace; ``text`` is the concatenation of its segments."""

    trace_id: str
    problem_id: str
    kind: str
    segments: list[str]
    segment_kinds: list[str]  # step | wrong | reflection
    node_ids: list[str]  # one per segment, "" for reflections
    answer: str | None
    n_tokens: int
    mode: str
    seed: int = 0
    median_correct_tokens: float | None = None
    length_ratio: float | None = None

    @property
    def text(self) -> str:
        return "".join(self.segments)

    @property
    def wrong_positions(self) -> list[int]:
        return [i for i, kind in enumerate(self.segment_kinds) if kind == "wrong"]

    def wrong_spans(self) -> list[tuple[int, int]]:
        """Character span of each wrong step in ``text``."""
        starts, pos = [], 0
        for seg in self.segments:
            starts.append(pos)
            pos += len(seg)
        return [(starts[i], starts[i] + len(self.segments[i])) for i in self.wrong_positions]

    def row(self, run_id: str) -> dict:
        """This trace as a row of the ``traces`` table."""
        spans = self.wrong_spans()
        return {
            "run_id": run_id, "trace_id": self.trace_id, "problem_id": self.problem_id, "kind": self.kind,
            "text": self.text, "n_tokens": self.n_tokens, "segments": self.segments,
            "segment_kinds": self.segment_kinds, "node_ids": self.node_ids,
            "wrong_positions": self.wrong_positions, "wrong_char_starts": [s for s, _ in spans],
            "wrong_char_ends": [e for _, e in spans], "answer": self.answer, "mode": self.mode,
            "median_correct_tokens": self.median_correct_tokens, "length_ratio": self.length_ratio,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class MineConfig:
    """How traces are mined; one config for every kind."""

    mode: str = "verified"  # verified: right answer and every step labeled good; answer-only: right answer
    max_traces_per_problem: int = 1  # backtrack/journey: traces per problem (one per distinct good path)
    max_wrong_per_node: int = 2  # journey: wrong attempts before the good step at one node
    max_wrong_per_trace: int = 3  # journey: wrong attempts in a whole trace
    min_wrong_journey: int = 2  # journey: fewer detours than this is a backtrack, not a journey
    seed: int = 0  # picks detours and reflection phrasings; same seed, same traces
    reflection: ReflectionConfig = field(default_factory=ReflectionConfig)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if min(self.max_traces_per_problem, self.max_wrong_per_node, self.max_wrong_per_trace) < 1:
            raise ValueError("trace caps must be at least 1")
        if not 1 <= self.min_wrong_journey <= self.max_wrong_per_trace:
            raise ValueError("min_wrong_journey must be between 1 and max_wrong_per_trace")


def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _order(key: str, seed: int) -> str:
    """A seeded, deterministic sort key: the same seed always orders candidates the same way."""
    return _text_hash(f"{seed}\x1f{key}")


def is_good(node_id: str, labels: Labels) -> bool:
    label = labels.get(node_id)
    return label is not None and label.hard


def is_bad(node_id: str, labels: Labels) -> bool:
    label = labels.get(node_id)
    return label is not None and not label.hard


def eligible(sol: Solution, labels: Labels, mode: str) -> bool:
    """A solution a trace may be built from: right answer, and in ``verified`` mode every step good."""
    return sol.correct and (mode == "answer-only" or all(is_good(nid, labels) for nid in sol.node_ids))


def solutions_from_tree(tree: Tree) -> list[Solution]:
    """Every path to a terminal node, as a ``Solution`` (used when mining straight from trees)."""
    out = []
    for node in tree.nodes.values():
        if node.terminal:
            path = tree.path_to(node)
            out.append(Solution(node.node_id, tree.problem_id, tuple(n.node_id for n in path),
                                tuple(n.text for n in path), sum(n.n_tokens for n in path), node.answer,
                                bool(node.outcome_correct)))
    return out


def shortest_correct(solutions: list[Solution], labels: Labels, mode: str = "verified") -> Trace | None:
    """The fewest-token eligible solution of one problem; ties broken by text hash, then solution id.

    ``length_ratio`` compares it with the median of the problem's correct solutions (any labels).
    """
    correct = [s for s in solutions if s.correct]
    pool = [s for s in correct if eligible(s, labels, mode)]
    if not pool:
        return None
    best = min(pool, key=lambda s: (s.n_tokens, _text_hash(s.text), s.solution_id))
    median = float(statistics.median(s.n_tokens for s in correct))
    return Trace(
        trace_id=request_key("shortest", mode, *best.node_ids), problem_id=best.problem_id, kind="shortest",
        segments=list(best.steps), segment_kinds=["step"] * len(best.steps), node_ids=list(best.node_ids),
        answer=best.answer, n_tokens=best.n_tokens, mode=mode, median_correct_tokens=median,
        length_ratio=best.n_tokens / median if median else None)


def _wrong_siblings(tree: Tree, path: list[Node], labels: Labels, seed: int) -> list[list[Node]]:
    """For each position on ``path``: the siblings labeled bad, in seeded order."""
    out = []
    parents = [tree.root, *path[:-1]]
    for parent, good in zip(parents, path, strict=True):
        bad = [tree.nodes[c] for c in parent.children if c != good.node_id and is_bad(c, labels)]
        out.append(sorted(bad, key=lambda n: _order(n.node_id, seed)))
    return out


def _choose_detours(candidates: list[list[Node]], kind: str, cfg: MineConfig) -> dict[int, list[Node]]:
    """Which wrong steps go where: one for backtrack; for journey, capped per node and per trace."""
    per_node = 1 if kind == "backtrack" else cfg.max_wrong_per_node
    total = 1 if kind == "backtrack" else cfg.max_wrong_per_trace
    pool = [(pos, node) for pos, bad in enumerate(candidates) for node in bad[:per_node]]
    chosen = sorted(pool, key=lambda item: _order(item[1].node_id, cfg.seed))[:total]
    out: dict[int, list[Node]] = {}
    for pos, node in sorted(chosen, key=lambda item: (item[0], _order(item[1].node_id, cfg.seed))):
        out.setdefault(pos, []).append(node)
    return out


def _build_detour_trace(path: list[Node], detours: dict[int, list[Node]], labels: Labels, kind: str,
                        answer: str | None, cfg: MineConfig) -> Trace:
    ids = [n.node_id for n in path]
    trace_id = request_key(kind, cfg.seed, *ids, *(n.node_id for ns in detours.values() for n in ns))
    segments, kinds, node_ids, tokens = [], [], [], 0
    for pos, good in enumerate(path):
        for k, wrong in enumerate(detours.get(pos, [])):
            anchor = path[pos - 1].text if pos else None
            detour = Detour(pos + 1, wrong.text, labels.get(wrong.node_id), anchor)
            segments += [wrong.text, reflect(detour, cfg.reflection, f"{trace_id}:{pos}:{k}")]
            kinds += ["wrong", "reflection"]
            node_ids += [wrong.node_id, ""]
            tokens += wrong.n_tokens
        segments.append(good.text)
        kinds.append("step")
        node_ids.append(good.node_id)
        tokens += good.n_tokens
    return Trace(trace_id, path[0].problem_id, kind, segments, kinds, node_ids, answer, tokens, cfg.mode,
                 cfg.seed)


def detour_traces(tree: Tree, labels: Labels, kind: str, cfg: MineConfig) -> list[Trace]:
    """Backtrack or journey traces of one tree, one per good path, up to ``cfg.max_traces_per_problem``.

    Good paths are tried shortest first (ties by text hash); a path without a usable wrong sibling, or with
    fewer than ``cfg.min_wrong_journey`` for a journey, yields no trace.
    """
    sols = [s for s in solutions_from_tree(tree) if eligible(s, labels, cfg.mode)]
    sols.sort(key=lambda s: (s.n_tokens, _text_hash(s.text), s.solution_id))
    need = 1 if kind == "backtrack" else cfg.min_wrong_journey
    traces: list[Trace] = []
    for sol in sols:
        path = [tree.nodes[nid] for nid in sol.node_ids]
        detours = _choose_detours(_wrong_siblings(tree, path, labels, cfg.seed), kind, cfg)
        if sum(map(len, detours.values())) >= need:
            traces.append(_build_detour_trace(path, detours, labels, kind, sol.answer, cfg))
        if len(traces) >= cfg.max_traces_per_problem:
            break
    return traces


def _mine_shortest(tree: Tree, labels: Labels, cfg: MineConfig) -> list[Trace]:
    trace = shortest_correct(solutions_from_tree(tree), labels, cfg.mode)
    return [trace] if trace else []


MINERS: dict[str, Callable[[Tree, Labels, MineConfig], list[Trace]]] = {
    "shortest": _mine_shortest,
    "backtrack": lambda tree, labels, cfg: detour_traces(tree, labels, "backtrack", cfg),
    "journey": lambda tree, labels, cfg: detour_traces(tree, labels, "journey", cfg),
}


def mine(trees: list[Tree], labels: Labels, kind: str, cfg: MineConfig | None = None) -> list[Trace]:
    """Mine ``kind`` traces (a key of ``MINERS``) from every tree, in tree order."""
    if kind not in MINERS:
        raise ValueError(f"unknown trace kind {kind!r}; known: {sorted(MINERS)}")
    cfg = cfg or MineConfig()
    return [trace for tree in trees for trace in MINERS[kind](tree, labels, cfg)]
