"""Table rows of a labeled tree, matching ``storage/schemas.py`` column for column."""

from __future__ import annotations

from search.labeling.base import LabelResult
from search.sampling import Solution
from search.tree import Tree


def rows(tree: Tree, result: LabelResult, run_id: str, solutions: list[Solution]) -> dict[str, list[dict]]:
    """Rows for ``nodes``, ``rollouts``, ``step_labels`` and ``solutions``; every rollout on the tree is kept.

    ``solutions`` are aligned with ``result.first_errors`` (the paths the strategy labeled, in order).
    """
    pid = tree.problem_id
    nodes = [{"run_id": run_id, "node_id": n.node_id, "parent_id": n.parent_id, "problem_id": pid,
              "depth": n.depth, "text": n.text, "n_tokens": n.n_tokens, "terminal": n.terminal,
              "answer": n.answer, "outcome_correct": n.outcome_correct, "origin": n.origin, "n": n.n,
              "n_correct": n.n_correct, "value": n.value, "code": n.tool.code if n.tool else None,
              "tool_output": n.tool.output if n.tool else None, "tool_verdict": n.tool.verdict if n.tool else None}
             for n in tree.nodes.values()]
    rollouts = [{"run_id": run_id, "request_key": r.request_key, "node_id": r.node_id, "problem_id": pid,
                 "rollout_index": r.index, "text": r.text, "n_tokens": r.n_tokens,
                 "finish_reason": r.finish_reason, "answer": r.answer, "correct": r.correct}
                for n in tree.nodes.values() for r in n.rollouts]
    labels = [{"run_id": run_id, "node_id": lab.node_id, "problem_id": pid, "strategy": lab.strategy,
               "n": lab.n, "n_correct": lab.n_correct, "value": lab.value, "hard": lab.hard,
               "soft": lab.soft, "label_source": lab.label_source} for lab in result.labels.values()]
    sols = [{"run_id": run_id, "solution_id": s.solution_id, "problem_id": pid,
             "sample_index": s.sample_index, "text": s.text, "n_steps": len(s.path), "n_tokens": s.n_tokens,
             "finish_reason": s.finish_reason, "answer": s.answer, "correct": s.correct,
             "node_ids": [n.node_id for n in s.path], "first_error": fe,
             "true_first_error": s.true_first_error}
            for s, fe in zip(solutions, result.first_errors, strict=True)]
    return {"nodes": nodes, "rollouts": rollouts, "step_labels": labels, "solutions": sols}
