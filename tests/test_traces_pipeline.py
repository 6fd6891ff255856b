"""Jobs end to end on a stored run: mine -> datasets -> export, and perturb, through shards and the catalog."""

from __future__ import annotations

from datasets import load_dataset

from cluster import arith
from pipelines.export import build_datasets, export
from pipelines.mine import mine_run
from pipelines.perturb import perturb_run
from search.problems import Problem
from search.traces import solutions_from_tree
from storage.catalog import Catalog
from storage.shards import ShardWriter
from tests.traces_fixtures import marble_tree

QUESTION = "Tom has 3 bags of 16 marbles and gives away a third. How many does he keep?"


def _store(root, run_id: str = "r1") -> None:
    tree, labels, _ = marble_tree()
    nodes = [{"node_id": n.node_id, "parent_id": n.parent_id, "problem_id": n.problem_id, "depth": n.depth,
              "text": n.text, "n_tokens": n.n_tokens, "terminal": n.terminal, "answer": n.answer,
              "outcome_correct": n.outcome_correct, "origin": n.origin} for n in tree.nodes.values()]
    sols = [{"solution_id": s.solution_id, "problem_id": s.problem_id, "text": s.text, "n_tokens": s.n_tokens,
             "node_ids": list(s.node_ids), "answer": s.answer, "correct": s.correct,
             "n_steps": len(s.steps)} for s in solutions_from_tree(tree)]
    step_labels = [{"node_id": nid, "problem_id": tree.problem_id, "strategy": "linear", "n": lb.n,
                    "n_correct": lb.n_correct, "value": lb.soft, "hard": lb.hard, "soft": lb.soft,
                    "label_source": "mc"} for nid, lb in labels.items()]
    problems = [{"problem_id": tree.problem_id, "source": "hand", "question": QUESTION, "gold_answer": "32"}]
    with ShardWriter(root, run_id) as w:
        w.commit("batch-0", {"problems": problems, "nodes": nodes, "solutions": sols, "step_labels": step_labels})


def test_mine_build_export_round_trip(tmp_path):
    root = tmp_path / "data"
    _store(root)
    assert mine_run(root, "r1", kind="shortest") == {"mined": 1, "kept": 1, "filtered": 0}
    # two good paths give two backtracks; the per-problem cap keeps the first (shortest) one
    assert mine_run(root, "r1", kind="backtrack", seed=2, max_traces_per_problem=2, per_problem_cap=1) == {
        "mined": 2, "kept": 1, "filtered": 1}
    # only the shorter good path has two wrong siblings to visit, so one journey
    assert mine_run(root, "r1", kind="journey", max_traces_per_problem=2)["mined"] == 1
    with Catalog(root) as cat:
        kinds = cat.sql("SELECT kind, count(*) AS n FROM traces GROUP BY kind ORDER BY kind").to_pylist()
        filtered = cat.sql("SELECT filter, kept_id FROM filtered").to_pylist()
        shortest = cat.sql("SELECT length_ratio, n_tokens FROM traces WHERE kind = 'shortest'").to_pylist()[0]
    assert shortest == {"length_ratio": 30 / 32, "n_tokens": 30}
    assert {r["kind"]: r["n"] for r in kinds} == {"backtrack": 1, "journey": 1, "shortest": 1}
    assert filtered == [{"filter": "per_problem_cap", "kept_id": ""}]
    counts = build_datasets(root, "r1")
    assert counts["sft_dataset"] == sum(r["n"] for r in kinds) and counts["prm_dataset"] == 2
    [prm] = export("trl-prm", tmp_path / "out", root, "r1")
    [sft] = export("trl-sft", tmp_path / "out", root, "r1", sft_style="prompt-completion")
    assert load_dataset("parquet", data_files=str(prm), split="train").num_rows == 2
    rows = load_dataset("parquet", data_files=str(sft), split="train")
    assert rows.column_names == ["prompt", "completion"] and QUESTION in rows[0]["prompt"]
    # re-mining with the same settings commits nothing new
    mine_run(root, "r1", kind="shortest")
    with Catalog(root) as cat:
        assert cat.sql("SELECT count(*) AS n FROM traces WHERE kind = 'shortest'").to_pylist()[0]["n"] == 1


def test_perturb_job_writes_variants_as_a_new_run(tmp_path):
    root = tmp_path / "data"
    spec = arith.generate(1, seed=5, mix={2: 1.0})[0]
    p = Problem.make(spec.question, str(spec.answer), "arith", spec.meta())
    bad = Problem.make("What is 2 + 2?", "4", "gsm8k")
    with ShardWriter(root, "src") as w:
        w.commit("p", {"problems": [{"problem_id": q.problem_id, "source": q.source, "question": q.question,
                                     "gold_answer": q.gold_answer, "meta_json": q.meta_json()} for q in (p, bad)]})
    stats = perturb_run("variants", root, run_id="src", n_variants=3)
    assert stats == {"sources": 2, "variants": 3, "rejected": 1}
    with Catalog(root) as cat:
        rows = cat.sql("SELECT question, gold_answer FROM problems", run_id="variants").to_pylist()
        rejects = cat.sql("SELECT reason FROM rejects", run_id="variants").to_pylist()
    assert all(str(arith.parse_question(r["question"]).answer) == r["gold_answer"] for r in rows)
    assert "no perturber" in rejects[0]["reason"]
