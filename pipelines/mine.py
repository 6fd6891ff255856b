"""``tracemill mine``: stored trees and labels -> filtered ``traces`` (+ ``filtered`` rows with reasons).

Load: ``nodes``, ``solutions``, ``step_labels`` of one run through the catalog. Build: ``search.traces``.
Filter: ``search.traces.filters`` (shortest first, so the shortest of a duplicate group survives). Save: the run's
one ``traces-<kind>`` shard, *replaced*: mining a kind again (with the same or other settings) swaps that kind's
traces and their ``filtered`` rows, so the ``traces`` table never holds a trace twice.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pyarrow as pa

from pipelines.config import run_delimiter
from search.traces.filters import FilterConfig, apply_filters, load_eval_texts
from search.traces.miners import MINERS, Labels, MineConfig, Solution, mine, shortest_correct
from search.traces.reflection import ReflectionConfig, StepLabel
from search.tree import Node, Tree
from storage.catalog import Catalog
from storage.layout import DEFAULT_ROOT
from storage.runs import require_run
from storage.schemas import TRACES
from storage.shards import ShardWriter

# Several strategies may label one node: with none chosen, the label with the most rollouts wins.
_LABELS_SQL = """
SELECT node_id, hard, soft, n, n_correct FROM (
  SELECT *, row_number() OVER (PARTITION BY node_id ORDER BY n DESC NULLS LAST, strategy) AS rank
  FROM step_labels WHERE $strategy IS NULL OR strategy = $strategy) WHERE rank = 1
"""


def load_labels(cat: Catalog, run_id: str, strategy: str | None = None) -> Labels:
    rows = cat.sql(_LABELS_SQL, run_id=run_id, params={"strategy": strategy}).to_pylist()
    return {r["node_id"]: StepLabel(bool(r["hard"]), r["soft"], r["n"] or 0, r["n_correct"] or 0) for r in rows}


def trees_from_nodes(nodes: pa.Table) -> list[Tree]:
    """Rebuild one ``Tree`` per problem from ``nodes`` rows (parents before children, by depth)."""
    trees: dict[str, Tree] = {}
    for r in sorted(nodes.to_pylist(), key=lambda r: (r["problem_id"], r["depth"], r["node_id"])):
        tree = trees.setdefault(r["problem_id"], Tree(r["problem_id"]))
        parent = tree.nodes.get(r["parent_id"])
        if r["depth"] == 0 or parent is None or r["node_id"] in tree.nodes:
            continue  # the root row (if stored) or an orphan whose parent was not kept
        node = Node(r["node_id"], r["parent_id"], r["problem_id"], r["depth"], r["text"],
                    parent.prefix + r["text"], n_tokens=r["n_tokens"] or 0, terminal=bool(r["terminal"]),
                    answer=r["answer"], outcome_correct=r["outcome_correct"], origin=r["origin"] or "sample")
        tree.nodes[node.node_id] = node
        parent.children.append(node.node_id)
    return list(trees.values())


def load_solutions(cat: Catalog, run_id: str) -> list[Solution]:
    """``solutions`` rows with their step texts (from ``nodes``), in a stable order."""
    texts = {r["node_id"]: r["text"] for r in cat.sql("SELECT node_id, text FROM nodes", run_id=run_id).to_pylist()}
    rows = cat.sql("SELECT solution_id, problem_id, node_ids, n_tokens, answer, correct FROM solutions "
                   "ORDER BY problem_id, solution_id", run_id=run_id).to_pylist()
    return [Solution(r["solution_id"], r["problem_id"], tuple(r["node_ids"]),
                     tuple(texts.get(nid, "") for nid in r["node_ids"]), r["n_tokens"] or 0, r["answer"],
                     bool(r["correct"])) for r in rows if all(nid in texts for nid in r["node_ids"])]


def _shortest(cat: Catalog, run_id: str, labels: Labels, cfg: MineConfig) -> list:
    by_problem: dict[str, list[Solution]] = defaultdict(list)
    for sol in load_solutions(cat, run_id):
        by_problem[sol.problem_id].append(sol)
    return [t for sols in by_problem.values() if (t := shortest_correct(sols, labels, cfg.mode))]


def mine_run(root: Path = DEFAULT_ROOT, run_id: str = "", kind: str = "shortest", mode: str = "verified",
             seed: int = 0, strategy: str | None = None, max_traces_per_problem: int = 1,
             max_wrong_per_node: int = 2, max_wrong_per_trace: int = 3, per_problem_cap: int = 4,
             near_dup_threshold: float = 0.8, eval_sets: tuple[Path, ...] = ()) -> dict[str, int]:
    """Mine ``kind`` traces of ``run_id``, filter them and commit them to the run; returns counts.

    ``eval_sets``: files or folders of eval questions (JSONL/JSON) to decontaminate against (13-gram).
    """
    record = require_run(root, run_id)
    if kind not in MINERS:
        raise ValueError(f"unknown trace kind {kind!r}; known: {sorted(MINERS)}")
    delimiter = run_delimiter(record)  # reflections are steps of their own; near-dup shingles split steps
    cfg = MineConfig(mode=mode, seed=seed, max_traces_per_problem=max_traces_per_problem,
                     max_wrong_per_node=max_wrong_per_node, max_wrong_per_trace=max_wrong_per_trace,
                     reflection=ReflectionConfig(delimiter=delimiter))
    with Catalog(root) as cat:
        labels = load_labels(cat, run_id, strategy)
        if kind == "shortest":
            traces = _shortest(cat, run_id, labels, cfg)
        else:
            nodes = cat.sql("SELECT * FROM nodes", run_id=run_id)
            traces = mine(trees_from_nodes(nodes), labels, kind, cfg)
    rows = sorted((t.row(run_id) for t in traces), key=lambda r: (r["problem_id"], r["n_tokens"], r["trace_id"]))
    table = pa.Table.from_pylist(rows, schema=TRACES)
    eval_texts = {"eval": load_eval_texts(eval_sets)} if eval_sets else {}
    steps = ("exact_dup", "near_dup", "contamination", "per_problem_cap") if eval_texts else \
        ("exact_dup", "near_dup", "per_problem_cap")
    result = apply_filters(table, FilterConfig(steps=steps, eval_texts=eval_texts, per_problem_cap=per_problem_cap,
                                               threshold=near_dup_threshold, delimiter=delimiter), "traces", run_id)
    with ShardWriter(root, run_id) as writer:
        writer.replace(f"traces-{kind}", {"traces": result.kept, "filtered": result.filtered})
    return {"mined": table.num_rows, "kept": result.kept.num_rows, "filtered": result.filtered.num_rows}
