"""Jobs end to end on a stored run: mine -> datasets -> export, and perturb, through shards and the catalog."""

from __future__ import annotations

from pathlib import Path

import pytest
from datasets import load_dataset

import pipelines.export as export_module
from cluster.problems import arith
from cluster.problems.problem import Problem
from pipelines.export import ExportOptions, build_datasets, export
from pipelines.mine import mine_run
from pipelines.perturb import perturb_run
from search.traces.miners import solutions_from_tree
from storage.catalog import Catalog
from storage.runs import UnknownRunError, start_run
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
    start_run(root, run_id, {"mining": {"prm_after_error": "cut"}}, model="hand", engine="none")
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
    out = tmp_path / "out"
    export("trl-prm", out, root, "r1")
    export("trl-sft", out, root, "r1", ExportOptions(sft_style="prompt-completion"))
    assert load_dataset(str(out), "prm", split="train").num_rows == 2
    rows = load_dataset(str(out), "sft", split="train")
    assert {"prompt", "completion"} <= set(rows.column_names) and QUESTION in rows[0]["prompt"]
    # re-mining a kind, with the same or other settings, replaces that kind's traces
    mine_run(root, "r1", kind="shortest")
    mine_run(root, "r1", kind="backtrack", seed=2, max_traces_per_problem=2, per_problem_cap=2)
    with Catalog(root) as cat:
        n = cat.sql("SELECT kind, count(*) AS n, count(DISTINCT trace_id) AS d FROM traces GROUP BY 1 ORDER BY 1").to_pylist()
        assert n == [{"kind": "backtrack", "n": 2, "d": 2}, {"kind": "journey", "n": 1, "d": 1},
                     {"kind": "shortest", "n": 1, "d": 1}]
        assert cat.sql("SELECT count(*) AS n FROM filtered WHERE table_name = 'traces'").to_pylist()[0]["n"] == 0


def _tables(root, run_id="r1") -> dict[str, list]:
    with Catalog(root) as cat:
        return {t: sorted(map(str, cat.sql(f"SELECT * FROM {t}", run_id=run_id).to_pylist()))
                for t in ("traces", "prm_dataset", "sft_dataset", "filtered")}


def test_export_twice_gives_identical_files_and_leaves_the_run_tables_unchanged(tmp_path):
    root = tmp_path / "data"
    _store(root)
    for kind in ("shortest", "backtrack"):
        mine_run(root, "r1", kind=kind)
    build_datasets(root, "r1")
    before = _tables(root)
    opts = ExportOptions(test_fraction=0.5, math_shepherd=True)
    first = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in export("hf", tmp_path / "a", root, "r1", opts)}
    again = {p.relative_to(tmp_path / "b"): p.read_bytes() for p in export("hf", tmp_path / "b", root, "r1", opts)}
    assert first == again and Path("README.md") in first and Path("prm/train.parquet") in first or \
        Path("prm/test.parquet") in first
    assert _tables(root) == before
    for table, rows in before.items():
        assert len(rows) == len(set(rows)), table
    card = (tmp_path / "a" / "README.md").read_text()
    assert "config_name: prm" in card and "run id: `r1`" in card and "config hash" in card
    grpo = load_dataset(str(tmp_path / "a"), "grpo")
    assert sum(map(len, grpo.values())) == 1 and next(iter(grpo.values()))[0]["answer"] == "32"


def test_a_failed_export_leaves_the_previous_files_and_no_partial_ones(tmp_path, monkeypatch):
    root = tmp_path / "data"
    _store(root)
    mine_run(root, "r1", kind="shortest")
    out = tmp_path / "out"
    export("hf", out, root, "r1")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export_module, "dataset_card", crash)  # fails after every dataset file is staged
    with pytest.raises(OSError):
        export("hf", out, root, "r1", ExportOptions(test_fraction=0.5))
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_jobs_on_an_unknown_run_raise_and_write_nothing(tmp_path):
    root = tmp_path / "data"
    _store(root)
    for job in (lambda: export("hf", tmp_path / "out", root, "nope"), lambda: mine_run(root, "nope"),
                lambda: build_datasets(root, "nope")):
        with pytest.raises(UnknownRunError):
            job()
    assert not (tmp_path / "out").exists() and not (root / "runs" / "nope").exists()


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
