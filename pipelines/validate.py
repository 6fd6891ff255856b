"""``tracemill validate RUN``: the invariants a user trains on, checked in SQL over the stored tables.

A run that finishes but breaks one of these is a failed run: its data would teach a model something the
evidence does not say. Each check counts its violations and shows one example row:

- ``problems_once``: every problem is stored once;
- ``solution_paths``: each solution's node ids exist and form a path from the root (parent links, depth);
- ``label_counts``: a label's ``n``/``n_correct``/``value`` are the node's stored rollouts;
- ``label_evidence``: no label contradicts its own rollouts: a step whose rollouts all failed is good only with
  ``label_source = 'override'``; an ``mc`` label is Math-Shepherd's rule (good iff a rollout succeeded); an
  ``outcome`` label is the terminal step's own answer; an ``inferred`` label has no rollouts of its own (the
  rule is the part of ``label_source`` before any ``:``, so ``mc:self-consistency`` and ``mc:llm-judge`` are
  checked as ``mc``);
- ``gold_sources``: a label ends with ``:self-consistency`` or ``:llm-judge`` exactly when its problem was
  judged against that pseudo-gold (the problem's ``meta_json.gold_source``), so filtering on the suffix finds
  every label of open prompts and nothing else;
- ``first_errors``: a solution's stored first error is its first step labeled bad, every step before it good;
- ``prm_negatives``: every solution with a labeled first error has a PRM row with that negative, or a
  ``filtered`` row saying why not;
- ``unique_ids``: no duplicate ids in nodes, rollouts, step labels, traces and either dataset;
- ``sft_answers``: every SFT example's trace reaches the gold answer (checked again by the answer judge);
- ``tool_labels``: every step whose stored code call failed or disagrees with its stated result
  (``search.tools.tool_error``, judged again from the stored columns) is labeled bad, a ``tool`` label is on
  such a step, and a step with code has its output and verdict (runs written before these columns pass).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from search.labeling.base import GOLD_SOURCES
from search.tools import tool_error
from search.tree import ToolCall
from storage.catalog import Catalog
from storage.manifest import committed_shards
from storage.runs import require_run
from verifier.answers import judge

TOLERANCE = 1e-9  # value == n_correct / n up to float rounding
_GOLD_SQL = ", ".join(f"'{g}'" for g in GOLD_SOURCES)  # pseudo-gold sources as a SQL list
_GOLD_RE = "|".join(GOLD_SOURCES)  # ... and as a regular expression's alternatives


@dataclass(frozen=True)
class Check:
    name: str
    violations: int
    example: str = ""  # one offending row, for the message

    @property
    def ok(self) -> bool:
        return self.violations == 0


@dataclass
class Validation:
    run_id: str
    checks: list[Check] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def summary(self) -> str:
        """One line: the verdict and the counts a user trains on."""
        c = self.counts
        head = "ok" if self.ok else f"{len(self.failed)} of {len(self.checks)} checks FAILED"
        return (f"validate {self.run_id}: {head} ({c.get('problems', 0)} problems, {c.get('solutions', 0)} "
                f"solutions, {c.get('labeled_errors', 0)} with a labeled first error; {c.get('prm_rows', 0)} PRM "
                f"rows, {c.get('prm_negatives', 0)} with a negative; {c.get('sft_rows', 0)} SFT rows)")


# name -> SQL selecting the violating rows (a short description of each in column ``what``)
_CHECKS: dict[str, str] = {
    "problems_once": """
        SELECT problem_id || ' stored ' || count(*) || ' times' AS what FROM problems GROUP BY problem_id
        HAVING count(*) > 1""",
    "solution_paths": """
        WITH steps AS (SELECT DISTINCT solution_id, problem_id, unnest(node_ids) AS node_id,
                              generate_subscripts(node_ids, 1) AS pos FROM solutions),
             nodes_once AS (SELECT DISTINCT node_id, parent_id, depth, problem_id FROM nodes)
        SELECT 'solution ' || s.solution_id || ' step ' || (s.pos - 1) || ': ' ||
               CASE WHEN n.node_id IS NULL THEN 'node ' || s.node_id || ' missing'
                    WHEN n.problem_id <> s.problem_id THEN 'node of another problem'
                    WHEN n.depth <> s.pos THEN 'depth ' || n.depth
                    ELSE 'parent is not the previous step' END AS what
        FROM steps s LEFT JOIN nodes_once n USING (node_id)
        LEFT JOIN steps p ON p.solution_id = s.solution_id AND p.pos = s.pos - 1
        WHERE n.node_id IS NULL OR n.problem_id <> s.problem_id OR n.depth <> s.pos
           OR (s.pos > 1 AND n.parent_id IS DISTINCT FROM p.node_id)""",
    "label_counts": f"""
        WITH r AS (SELECT node_id, count(*) AS n, count(*) FILTER (WHERE correct) AS k FROM rollouts GROUP BY 1)
        SELECT 'node ' || l.node_id || ' (' || l.strategy || '): label n=' || l.n || ' n_correct=' ||
               l.n_correct || ' value=' || coalesce(l.value::VARCHAR, 'null') || ', stored rollouts ' ||
               coalesce(r.n, 0) || '/' || coalesce(r.k, 0) AS what
        FROM step_labels l LEFT JOIN r USING (node_id)
        WHERE l.n <> coalesce(r.n, 0) OR l.n_correct <> coalesce(r.k, 0)
           OR (l.n > 0 AND abs(l.value - l.n_correct / l.n) > {TOLERANCE})""",
    "label_evidence": """
        SELECT 'node ' || l.node_id || ' (' || l.strategy || ', ' || l.label_source || '): hard=' || l.hard ||
               ' with ' || l.n_correct || '/' || l.n || ' rollouts correct' AS what
        FROM step_labels l LEFT JOIN (SELECT DISTINCT node_id, terminal, outcome_correct FROM nodes) n USING (node_id)
        WHERE (l.hard AND l.n >= 1 AND l.n_correct = 0 AND split_part(l.label_source, ':', 1) <> 'override')
           OR (split_part(l.label_source, ':', 1) = 'mc' AND l.hard <> (l.n_correct > 0))
           OR (split_part(l.label_source, ':', 1) = 'override' AND NOT (l.hard AND l.n >= 1 AND l.n_correct = 0))
           OR (split_part(l.label_source, ':', 1) = 'inferred' AND l.n > 0)
           OR (split_part(l.label_source, ':', 1) = 'outcome' AND l.hard IS DISTINCT FROM n.outcome_correct)""",
    "gold_sources": f"""
        WITH p AS (SELECT DISTINCT problem_id, json_extract_string(meta_json, '$.gold_source') AS gold_source
                   FROM problems)
        SELECT 'node ' || l.node_id || ' (' || l.strategy || ', ' || l.label_source || '): its problem''s gold answer came from ' ||
               coalesce(p.gold_source, 'its data') AS what
        FROM step_labels l LEFT JOIN p USING (problem_id)
        WHERE regexp_extract(l.label_source, ':({_GOLD_RE})$', 1)
              <> CASE WHEN p.gold_source IN ({_GOLD_SQL}) THEN p.gold_source ELSE '' END""",
    "first_errors": """
        WITH steps AS (SELECT DISTINCT solution_id, first_error, unnest(node_ids) AS node_id,
                              generate_subscripts(node_ids, 1) - 1 AS pos FROM solutions WHERE first_error IS NOT NULL),
             lab AS (SELECT node_id, bool_and(hard) AS hard FROM step_labels GROUP BY 1)
        SELECT DISTINCT 'solution ' || s.solution_id || ': first error ' || s.first_error || ' but step ' ||
               s.pos || ' is ' || CASE WHEN l.hard IS NULL THEN 'unlabeled' WHEN l.hard THEN 'good' ELSE 'bad' END
               AS what
        FROM steps s LEFT JOIN lab l USING (node_id)
        WHERE (s.first_error = -1 AND l.hard IS DISTINCT FROM true)
           OR (s.pos < s.first_error AND l.hard IS DISTINCT FROM true)
           OR (s.pos = s.first_error AND l.hard IS DISTINCT FROM false)""",
    "prm_negatives": """
        WITH errs AS (SELECT DISTINCT solution_id, first_error FROM solutions WHERE first_error >= 0)
        SELECT 'solution ' || e.solution_id || ' (first error ' || e.first_error || '): ' ||
               CASE WHEN p.source_id IS NULL THEN 'no PRM row and no filtered row'
                    ELSE 'PRM row has first error ' || p.first_error END AS what
        FROM errs e LEFT JOIN prm_dataset p ON p.source_id = e.solution_id
        WHERE (p.source_id IS NULL AND e.solution_id NOT IN
                  (SELECT row_id FROM filtered WHERE table_name = 'prm_dataset'))
           OR p.first_error <> e.first_error""",
    "unique_ids": """
        SELECT what FROM (
          SELECT 'nodes.node_id ' || node_id AS what FROM nodes GROUP BY node_id HAVING count(*) > 1
          UNION ALL SELECT 'rollouts.request_key ' || request_key FROM rollouts GROUP BY 1 HAVING count(*) > 1
          UNION ALL SELECT 'step_labels ' || node_id || '/' || strategy FROM step_labels GROUP BY node_id, strategy
                    HAVING count(*) > 1
          UNION ALL SELECT 'traces.trace_id ' || trace_id FROM traces GROUP BY 1 HAVING count(*) > 1
          UNION ALL SELECT 'prm_dataset.example_id ' || example_id FROM prm_dataset GROUP BY 1 HAVING count(*) > 1
          UNION ALL SELECT 'sft_dataset.example_id ' || example_id FROM sft_dataset GROUP BY 1 HAVING count(*) > 1)""",
}

_COUNTS = """
SELECT (SELECT count(*) FROM problems) AS problems, (SELECT count(*) FROM solutions) AS solutions,
       (SELECT count(DISTINCT solution_id) FROM solutions WHERE first_error >= 0) AS labeled_errors,
       (SELECT count(*) FROM prm_dataset) AS prm_rows,
       (SELECT count(*) FROM prm_dataset WHERE first_error >= 0) AS prm_negatives,
       (SELECT count(*) FROM sft_dataset) AS sft_rows, (SELECT count(*) FROM step_labels) AS step_labels
"""

_SFT = """
SELECT s.example_id, t.text, p.gold_answer FROM sft_dataset s JOIN traces t USING (trace_id)
JOIN (SELECT DISTINCT problem_id, gold_answer FROM problems) p ON p.problem_id = s.problem_id
"""


_TOOLS = """
SELECT n.node_id, n.text, n.code, n.tool_output, n.tool_verdict, l.strategy, l.hard, l.label_source
FROM nodes n LEFT JOIN step_labels l USING (node_id)
WHERE n.code IS NOT NULL OR l.label_source = 'tool' ORDER BY n.node_id, l.strategy
"""


def _tool_labels(cat: Catalog, run_id: str) -> Check:
    if "code" not in cat.sql("SELECT * FROM nodes LIMIT 0", run_id=run_id).column_names:
        return Check("tool_labels", 0)  # a run stored before nodes had tool columns
    wrong = []
    for r in cat.sql(_TOOLS, run_id=run_id).to_pylist():
        where = f"node {r['node_id']} ({r['strategy']}, {r['label_source']})"
        if r["code"] is not None and (r["tool_output"] is None or r["tool_verdict"] is None):
            wrong.append(f"node {r['node_id']}: code without its output or verdict")
            continue
        call = ToolCall(r["code"], r["tool_output"], r["tool_verdict"]) if r["code"] is not None else None
        why = tool_error(r["text"], call)
        if why is not None and r["hard"]:
            wrong.append(f"{where}: labeled good although {why}")
        elif why is None and r["label_source"] == "tool":
            wrong.append(f"{where}: a tool label, but its call ran and agrees with the step")
    return Check("tool_labels", len(wrong), wrong[0] if wrong else "")


def _sql_check(cat: Catalog, run_id: str, name: str, query: str) -> Check:
    rows = cat.sql(query, run_id=run_id).column("what").to_pylist()
    return Check(name, len(rows), rows[0] if rows else "")


def _sft_answers(cat: Catalog, run_id: str, correct: Callable[[str, str], bool]) -> Check:
    wrong = [r["example_id"] for r in cat.sql(_SFT, run_id=run_id).to_pylist()
             if not correct(r["text"], r["gold_answer"])]
    return Check("sft_answers", len(wrong), f"sft example {wrong[0]} does not reach the gold answer" if wrong else "")


def validate_run(root: Path, run_id: str, correct: Callable[[str, str], bool] | None = None) -> Validation:
    """Run every check on ``run_id``; ``correct(text, gold)`` judges SFT answers (default: the answer judge).

    ``prm_negatives`` is checked only once the run has built its datasets (``mining.datasets``).
    """
    require_run(root, run_id)
    correct = correct or (lambda text, gold: bool(judge(text, gold).correct))
    out = Validation(run_id)
    built = "datasets" in committed_shards(root, run_id)
    with Catalog(root, save=False) as cat:
        for name, query in _CHECKS.items():
            if name != "prm_negatives" or built:
                out.checks.append(_sql_check(cat, run_id, name, query))
        out.checks.append(_sft_answers(cat, run_id, correct))
        out.checks.append(_tool_labels(cat, run_id))
        out.counts = {k: int(v) for k, v in cat.sql(_COUNTS, run_id=run_id).to_pylist()[0].items()}
    return out
