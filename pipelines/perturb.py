"""``tracemill perturb``: problems of a run (or GSM-Symbolic template files) -> a new run of variants.

Load: the ``problems`` of ``run_id`` and/or template files. Build: ``cluster.problems.perturb``. Save: the variants as
``problems`` of ``out_run_id`` (a run of its own, so a later ``tracemill run`` can search them), and a
``rejects`` row for every problem that gave no variant.
"""

from __future__ import annotations

import json
from pathlib import Path

from cluster.engine import request_key
from cluster.problems.perturb import PerturbConfig, perturb, symbolic_problems
from cluster.problems.problem import Problem
from storage.catalog import Catalog
from storage.layout import DEFAULT_ROOT
from storage.runs import finish_run, start_run
from storage.shards import ShardWriter


def load_problems(root: Path, run_id: str) -> list[Problem]:
    with Catalog(root) as cat:
        rows = cat.sql("SELECT * FROM problems ORDER BY problem_id", run_id=run_id).to_pylist()
    return [Problem(r["problem_id"], r["question"], r["gold_answer"], r["source"],
                    json.loads(r["meta_json"] or "{}")) for r in rows]


def perturb_run(out_run_id: str, root: Path = DEFAULT_ROOT, run_id: str | None = None,
                templates: Path | None = None, n_variants: int = 4, seed: int = 0,
                max_tries: int = 500) -> dict[str, int]:
    """Write variants of ``run_id``'s problems and/or of the templates in folder ``templates``."""
    if run_id is None and templates is None:
        raise ValueError("give a run_id, a templates folder, or both")
    cfg = PerturbConfig(n_variants=n_variants, seed=seed, max_tries=max_tries)
    sources = (load_problems(root, run_id) if run_id else []) + (symbolic_problems(templates) if templates else [])
    variants, rejects = perturb(sources, cfg)
    config = {"job": "perturb", "from_run": run_id, "templates": str(templates) if templates else None,
              "n_variants": n_variants, "seed": seed, "max_tries": max_tries}
    start_run(root, out_run_id, config)
    rows = [{"problem_id": p.problem_id, "source": p.source, "question": p.question,
             "gold_answer": p.gold_answer, "meta_json": p.meta_json()} for p in variants]
    with ShardWriter(root, out_run_id) as writer:
        writer.commit("perturb-" + request_key(*config.values()), {"problems": rows, "rejects": rejects})
    stats = {"sources": len(sources), "variants": len(variants), "rejected": len(rejects)}
    finish_run(root, out_run_id, stats)
    return stats
