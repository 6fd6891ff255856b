"""The dataset invariants on fresh sim runs of every strategy, and ``validate`` catching each kind of damage.

One local Ray serves the module; each strategy gets its own sim run (default options), which must validate,
keep its negatives in the PRM rows, never call a step good against its own failed rollouts, and export twice
to identical files without adding a row anywhere.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.config import load_config
from pipelines.export import ExportOptions, export
from pipelines.run import execute
from pipelines.validate import validate_run
from storage.catalog import Catalog
from storage.shards import ShardWriter
from verifier.prm import ProcessRewardModel

STRATEGIES = ("linear", "binary", "adaptive", "mcts")
SIM = Path(__file__).resolve().parent.parent / "configs" / "sim.toml"
PRM_DEMO = SIM.with_name("prm_demo.toml")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, ray_cluster) -> Path:
    root = tmp_path_factory.mktemp("validate") / "data"
    for strategy in STRATEGIES:
        cfg = load_config(SIM, {"storage.root": str(root), "problems.n": 40, "labeling.strategy": strategy,
                                "labeling.options": {}, "engine.replicas": 1,
                                "mining.kinds": ["shortest", "backtrack"]})
        summary = execute(cfg, run_id=strategy, progress=False, report=False)
        assert summary.validation is not None
    return root


def _one(cat: Catalog, run_id: str, query: str) -> int:
    return cat.sql(query, run_id=run_id).to_pylist()[0]["n"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_fresh_run_of_every_strategy_validates_and_keeps_its_negatives(runs, strategy):
    result = validate_run(runs, strategy)
    assert result.ok, [(c.name, c.example) for c in result.failed]
    assert {c.name for c in result.checks} >= {"problems_once", "label_evidence", "prm_negatives", "unique_ids"}
    c = result.counts
    assert c["labeled_errors"] > 0, "the sim makes errors: a run with none labeled teaches nothing"
    assert c["prm_negatives"] >= 0.9 * c["labeled_errors"]
    with Catalog(runs) as cat:
        assert _one(cat, strategy, "SELECT count(*) AS n FROM step_labels WHERE hard AND n >= 2 AND n_correct = 0") == 0
        assert _one(cat, strategy, "SELECT count(*) AS n FROM prm_dataset WHERE list_contains(labels, false)") == \
            c["prm_negatives"]


@pytest.mark.parametrize("strategy", ["binary", "adaptive"])
def test_export_twice_is_byte_identical_and_adds_no_row(runs, strategy, tmp_path):
    keys = {"traces": "trace_id", "prm_dataset": "example_id", "sft_dataset": "example_id",
            "filtered": "table_name || row_id || filter"}

    def counts() -> dict[str, tuple[int, int]]:
        with Catalog(runs) as cat:
            return {t: tuple(cat.sql(f"SELECT count(*) AS a, count(DISTINCT {key}) AS b FROM {t}",
                                     run_id=strategy).to_pylist()[0].values()) for t, key in keys.items()}

    before = counts()
    assert all(a == b for a, b in before.values()), before
    files = [{p.relative_to(out): p.read_bytes() for p in export("hf", out, runs, strategy, ExportOptions(test_fraction=0.2))}
             for out in (tmp_path / "one", tmp_path / "two")]
    assert files[0] == files[1] and Path("prm/train.parquet") in files[0]
    assert counts() == before


def _damaged(runs: Path, tmp_path: Path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(runs, root)
    return root


def _first(root: Path, run_id: str, query: str) -> dict:
    with Catalog(root) as cat:
        return cat.sql(query, run_id=run_id).to_pylist()[0]


def _add(root: Path, run_id: str, tables: dict) -> None:
    with ShardWriter(root, run_id) as writer:
        writer.commit("damage", tables)


def _failed(root: Path, run_id: str) -> set[str]:
    return {c.name for c in validate_run(root, run_id).failed}


def test_validate_names_a_label_that_contradicts_its_rollouts(runs, tmp_path):
    root = _damaged(runs, tmp_path)
    row = _first(root, "linear", "SELECT * FROM step_labels WHERE n >= 2 AND n_correct = 0 LIMIT 1")
    # the same node labeled again by another strategy: good against its own 0/n rollouts
    _add(root, "linear", {"step_labels": [{**row, "strategy": "other", "hard": True, "label_source": "arith"}]})
    assert _failed(root, "linear") == {"label_evidence"}


def test_validate_names_duplicates_and_a_missing_negative(runs, tmp_path):
    root = _damaged(runs, tmp_path)
    problem = _first(root, "binary", "SELECT * FROM problems LIMIT 1")
    prm = _first(root, "binary", "SELECT * FROM prm_dataset WHERE first_error >= 0 LIMIT 1")
    _add(root, "binary", {"problems": [problem], "prm_dataset": [{**prm, "first_error": -1}]})
    failed = _failed(root, "binary")
    assert {"problems_once", "unique_ids", "prm_negatives"} <= failed


def test_validate_names_an_sft_trace_that_misses_the_gold_answer(runs, tmp_path):
    root = _damaged(runs, tmp_path)
    trace = _first(root, "adaptive", "SELECT * FROM traces LIMIT 1")
    sft = _first(root, "adaptive", f"SELECT * FROM sft_dataset WHERE trace_id = '{trace['trace_id']}'")
    wrong = {**trace, "trace_id": "wrong-trace", "text": trace["text"].rsplit("The answer is", 1)[0] + "The answer is -7."}
    _add(root, "adaptive", {"traces": [wrong], "sft_dataset": [{**sft, "example_id": "x", "trace_id": "wrong-trace"}]})
    assert _failed(root, "adaptive") == {"sft_answers"}


def test_validate_command_exit_codes(runs, tmp_path):
    cli = CliRunner()
    ok = cli.invoke(app, ["validate", "mcts", "--root", str(runs)])
    assert ok.exit_code == 0 and "validate mcts: ok" in ok.output
    unknown = cli.invoke(app, ["validate", "nope", "--root", str(runs)])
    assert unknown.exit_code == 2 and "no run 'nope'" in unknown.output
    root = _damaged(runs, tmp_path)
    _add(root, "mcts", {"problems": [_first(root, "mcts", "SELECT * FROM problems LIMIT 1")]})
    bad = cli.invoke(app, ["validate", "mcts", "--root", str(root)])
    assert bad.exit_code == 1 and "problems_once: 1 violation" in bad.output


def test_train_prm_reads_a_real_export_unchanged(runs, tmp_path, tiny_model_dir):
    """run -> export -> train-prm: the trainer reads the export folder as written, held-out split included."""
    export("hf", tmp_path / "export", runs, "binary", ExportOptions(test_fraction=0.25))
    cli = CliRunner()
    result = cli.invoke(app, ["train-prm", str(tmp_path / "export"), str(tmp_path / "prm"), "-c", str(PRM_DEMO),
                              "--set", f"backbone={tiny_model_dir}", "--set", "epochs=1", "--set", "max_length=512"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "prm" / "train_report.json").read_text())
    assert report["n_examples"] > 0 and report["n_steps"] > 0 and report["n_eval_examples"] > 0
    assert all(math.isfinite(x) for x in report["epoch_losses"]) and "held-out loss" in result.output
    scores = ProcessRewardModel.load(tmp_path / "prm").score("What is 2 + 3?", ["2 + 3 = 5.", "The answer is 5."])
    assert len(scores) == 2 and all(0 <= s <= 1 for s in scores)
