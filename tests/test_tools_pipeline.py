"""``configs/tools.toml`` end to end on the sim engine through Ray: code steps are run in the sandbox, stored
with their output, labeled by the tool where it refutes them (checked against the sim's exact truth), kept as
tool turns in the SFT rows and the export, and the run validates; a tampered tool label does not."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from cluster import sim_code
from pipelines.config import load_config
from pipelines.export import export
from pipelines.run import execute
from pipelines.validate import validate_run
from storage.catalog import Catalog

CONFIG = "configs/tools.toml"


@pytest.fixture(scope="module")
def tool_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tools") / "data"
    cfg = load_config(CONFIG, {"storage.root": str(root), "problems.n": 16, "ray.num_cpus": 2,
                               "engine.replicas": 1})
    summary = execute(cfg, run_id="tools", progress=False, report=False)
    return root, summary


def _sql(root, query: str) -> list[dict]:
    with Catalog(root, save=False) as cat:
        return cat.sql(query, run_id="tools").to_pylist()


def test_steps_store_code_output_and_verdict(tool_run):
    root, summary = tool_run
    assert summary.validation is not None and summary.validation.ok, summary.validation
    rows = _sql(root, "SELECT text, code, tool_output, tool_verdict FROM nodes WHERE code IS NOT NULL")
    assert len(rows) > 30
    assert {r["tool_verdict"] for r in rows} == {"ok", "error"}  # the sim's crashes really fail in the sandbox
    for r in rows:
        assert r["code"] in r["text"] and f"```output\n{r['tool_output']}\n```" in r["text"]
    rollouts = _sql(root, "SELECT count(*) AS c FROM rollouts WHERE text LIKE '%```output%'")[0]["c"]
    assert rollouts > 0  # rollouts ran their code too


def test_tool_labels_are_exactly_the_steps_whose_code_does_not_back_their_claim(tool_run):
    root, _ = tool_run
    rows = _sql(root, """SELECT n.node_id, n.text, n.code, l.hard, l.label_source, l.n FROM nodes n
                         JOIN step_labels l USING (node_id) WHERE n.origin = 'sample'""")
    tool = [r for r in rows if r["label_source"] == "tool"]
    assert len(tool) >= 5
    assert all(not r["hard"] and r["n"] == 0 and not sim_code.supported(r["text"]) for r in tool)  # precision 1
    refuted = [r for r in rows if r["code"] is not None and not sim_code.supported(r["text"])]
    assert {r["node_id"] for r in refuted} == {r["node_id"] for r in tool}  # and every labeled refuted step
    no_rollouts = _sql(root, "SELECT count(*) AS c FROM rollouts JOIN step_labels l USING (node_id) "
                             "WHERE l.label_source = 'tool'")[0]["c"]
    assert no_rollouts == 0


def test_first_errors_never_come_after_the_truth_where_the_tool_decided(tool_run):
    root, _ = tool_run
    rows = _sql(root, """SELECT s.first_error, s.true_first_error, s.node_ids FROM solutions s""")
    tool_ids = {r["node_id"] for r in _sql(root, "SELECT node_id FROM step_labels WHERE label_source = 'tool'")}
    decided = [r for r in rows if r["first_error"] is not None and r["first_error"] >= 0
               and r["node_ids"][r["first_error"]] in tool_ids]
    assert decided and all(0 <= r["true_first_error"] <= r["first_error"] for r in decided)
    assert _sql(root, "SELECT count(*) AS c FROM prm_dataset WHERE first_error >= 0")[0]["c"] > 0  # negatives


def test_sft_rows_and_export_keep_tool_turns(tool_run, tmp_path):
    root, _ = tool_run
    rows = _sql(root, "SELECT messages, completion FROM sft_dataset")
    with_tools = [r for r in rows if any(m["role"] == "tool" for m in r["messages"])]
    assert with_tools
    for r in with_tools:
        roles = [m["role"] for m in r["messages"]]
        assert roles[-1] == "assistant" and "tool" not in roles[:2]
        for i, m in enumerate(r["messages"]):
            if m["role"] == "tool":
                assert r["messages"][i - 1]["content"].endswith("```") and m["content"] in r["completion"]
    export("hf", tmp_path / "out", root=root, run_id="tools")
    sft = pq.read_table(tmp_path / "out" / "sft" / "train.parquet").to_pylist()
    assert any(m["role"] == "tool" for r in sft for m in r["completion"])


def test_validate_catches_a_tool_refuted_step_labeled_good(tool_run, tmp_path):
    import shutil

    root, _ = tool_run
    copy = tmp_path / "data"
    shutil.copytree(root, copy)
    for path in (copy / "runs" / "tools" / "step_labels").glob("*.parquet"):
        table = pq.read_table(path)
        rows = table.to_pylist()
        for r in rows:
            if r["label_source"] == "tool":
                r["hard"], r["label_source"] = True, "inferred"
        pq.write_table(table.from_pylist(rows, schema=table.schema), path)
    result = validate_run(copy, "tools")
    failed = {c.name: c for c in result.failed}
    assert "tool_labels" in failed and "labeled good although" in failed["tool_labels"].example


def test_a_run_stored_before_the_tool_columns_still_validates(tool_run, tmp_path):
    import shutil

    root, _ = tool_run
    copy = tmp_path / "data"
    shutil.copytree(root, copy)
    for path in (copy / "runs" / "tools" / "nodes").glob("*.parquet"):
        table = pq.read_table(path)
        pq.write_table(table.drop_columns(["code", "tool_output", "tool_verdict"]), path)
    result = validate_run(copy, "tools")
    assert result.ok, result.failed
    assert "tool_labels" in {c.name for c in result.checks}


def test_the_run_counts_its_sandbox_calls(tool_run):
    root, summary = tool_run
    stored = _sql(root, "SELECT count(*) AS c FROM nodes WHERE code IS NOT NULL")[0]["c"]
    assert summary.tool_calls >= stored > 0  # rollouts' calls come on top of the stored steps'
