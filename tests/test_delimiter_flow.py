"""``sampling.delimiter`` reaches every stage that splits or writes steps after the search: mining's reflection
steps, its near-duplicate filter and the PRM export all use the run's delimiter, not a default of their own."""

from __future__ import annotations

from pipelines.config import load_config
from pipelines.run import execute
from storage.catalog import Catalog


def test_a_run_with_a_single_newline_delimiter_mines_and_exports_with_it(ray_cluster, tmp_path):
    root = tmp_path / "data"
    cfg = load_config("configs/sim.toml", {"storage.root": str(root), "problems.n": 48, "sampling.delimiter": "\n",
                                           "mining.kinds": ["shortest", "backtrack"]})
    summary = execute(cfg, run_id="nl", progress=False, report=False)
    assert summary.validation.ok
    with Catalog(root, save=False) as cat:
        traces = cat.sql("SELECT kind, text FROM traces", run_id="nl").to_pylist()
        prm = cat.sql("SELECT completions FROM prm_dataset", run_id="nl").to_pylist()
    backtracks = [t["text"] for t in traces if t["kind"] == "backtrack"]
    assert backtracks and prm  # reflections were written and PRM rows built
    assert not any("\n\n" in text for text in backtracks)  # every reflection step ends with the run's "\n"
    assert all(step.count("\n") == 0 for row in prm for step in row["completions"])  # steps split on "\n"
