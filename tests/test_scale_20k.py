"""The issue's crash case: a 20,000-problem sim run whose arith set draws one question twice completes,
with the repeat in ``rejects`` (reason ``duplicate``), each problem stored once, and ``validate`` clean."""

from __future__ import annotations

import pytest

from pipelines.config import load_config
from pipelines.run import execute
from storage.catalog import Catalog

pytestmark = pytest.mark.slow
N = 20_000  # configs/sim.toml's mix, seed 0: problem 16087 repeats an earlier question


def test_20k_sim_run_keeps_its_duplicate_as_a_reject(tmp_path):
    root = tmp_path / "data"
    cfg = load_config("configs/sim.toml", {
        "storage.root": str(root), "problems.n": N, "ray.num_cpus": 2, "engine.num_cpus": 0.5,
        "sampling.n_solutions": 2, "labeling.strategy": "binary", "labeling.options": {},
        "mining.kinds": ["shortest"], "mining.datasets": False, "storage.shard_size": 500})
    summary = execute(cfg, run_id="big", progress=False, report=False)
    assert summary.validation is not None and summary.validation.ok, summary.validation.summary()
    with Catalog(root, save=False) as cat:
        once = cat.sql("SELECT count(*) AS n, count(DISTINCT problem_id) AS d FROM problems", run_id="big")
        rejects = cat.sql("SELECT source, reason FROM rejects WHERE stage = 'load'", run_id="big").to_pylist()
    assert once.to_pylist() == [{"n": N - 1, "d": N - 1}]
    assert rejects == [{"source": "arith:16087", "reason": "duplicate"}]
    assert summary.problems == N - 1 and summary.failed_problems == 0
