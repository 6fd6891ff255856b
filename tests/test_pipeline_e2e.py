"""The quickstart loop end to end through a Ray engine actor: a tiny random model (fast), and the real
SmolLM2 weights (slow): generation continues a given prefix, and every table lands where DuckDB reads it."""

from __future__ import annotations

import pytest

from cluster.engine import GenRequest
from pipelines.config import load_config
from pipelines.run import execute
from storage.catalog import Catalog

TABLES = ("problems", "solutions", "nodes", "rollouts", "step_labels")


def _run(tmp_path, model: str, **overrides):
    cfg = load_config(None, {"storage.root": str(tmp_path / "data"), "problems.n": 2, "ray.num_cpus": 2,
                             "engine.backend": "transformers",
                             "engine.model": model, "engine.num_cpus": 1, "sampling.n_solutions": 2,
                             "sampling.max_new_tokens": 24, "labeling.options": {"k": 2}, **overrides})
    return execute(cfg, run_id="e2e", progress=False, report=False)


def _counts(tmp_path) -> dict[str, int]:
    with Catalog(tmp_path / "data") as cat:
        return {t: cat.sql(f"SELECT count(*) AS c FROM {t}", run_id="e2e").column("c")[0].as_py() for t in TABLES}


def test_quickstart_loop_on_a_tiny_model_writes_every_table(tmp_path, tiny_model_dir):
    summary = _run(tmp_path, str(tiny_model_dir), **{"sampling.few_shot": 0})
    counts = _counts(tmp_path)
    assert counts["problems"] == 2 and counts["solutions"] == summary.solutions == 4
    assert counts["rollouts"] == summary.rollouts > 0 and counts["step_labels"] == summary.steps_labeled > 0
    with Catalog(tmp_path / "data") as cat:
        labels = cat.sql("SELECT n, n_correct, value, hard FROM step_labels WHERE n > 0", run_id="e2e").to_pylist()
    assert labels and all(r["n_correct"] <= r["n"] and r["hard"] == (r["value"] > 0) for r in labels)


@pytest.mark.slow
def test_smollm2_continues_a_prefix_and_the_loop_writes_rows_duckdb_reads(tmp_path):
    from cluster.transformers_config import TransformersConfig
    from cluster.transformers_engine import TransformersEngine

    engine = TransformersEngine(TransformersConfig("smollm2-135m-instruct"))
    prompt = engine.apply_chat_template([{"role": "user", "content": "Tom has 3 apples and buys 5 more. "
                                          "How many apples does he have?"}])
    prefix = "Tom starts with 3 apples.\n\nHe buys 5 more, so he has 3 + 5 ="
    [result] = engine.generate([GenRequest("k", prompt, prefix, n=2, max_new_tokens=12, temperature=0.0)])
    assert all(s.text.lstrip().startswith("8") for s in result.samples)  # it continues the equation
    _run(tmp_path, "smollm2-135m-instruct", **{"problems.n": 1})
    counts = _counts(tmp_path)
    assert counts["problems"] == 1 and counts["solutions"] == 2 and counts["nodes"] > 2
