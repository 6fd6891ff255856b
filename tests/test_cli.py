"""The command line: bad configs exit 2 with one line and write nothing; queries print in every format."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pipelines.cli import app

runner = CliRunner()


def _config(tmp_path, body: str):
    path = tmp_path / "c.toml"
    path.write_text(f'[storage]\nroot = "{tmp_path / "data"}"\n' + body)
    return path


@pytest.mark.parametrize("body, expected", [
    ("[engine]\nbackend = \"tpu\"\n", "engine.backend"),  # not an allowed value: the message lists them
    ("[sampling]\nn_solution = 4\n", "sampling.n_solution: unknown key"),
    ("[sampling]\nn_solutions = \"four\"\n", "sampling.n_solutions"),
    ("[problems]\nsource = \"/no/such/file.jsonl\"\n", "problems"),
    ("[labeling]\nstrategy = \"linear\"\noptions = { kk = 4 }\n", "labeling.options"),
    ("[problems\n", "not valid TOML"),
])
def test_bad_config_is_one_line_exit_2_and_writes_nothing(tmp_path, body, expected):
    result = runner.invoke(app, ["run", "-c", str(_config(tmp_path, body))])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], result.output
    assert not (tmp_path / "data").exists()


def test_allowed_values_are_named_in_the_error(tmp_path):
    result = runner.invoke(app, ["run", "-c", str(_config(tmp_path, "[engine]\nbackend = \"tpu\"\n"))])
    assert "'transformers'" in result.output and "'sim'" in result.output


def test_missing_config_file_and_bad_override_exit_2(tmp_path):
    assert runner.invoke(app, ["run", "-c", str(tmp_path / "nope.toml")]).exit_code == 2
    assert runner.invoke(app, ["run", "--set", "novalue"]).exit_code == 2


def test_every_command_help_shows_an_example():
    for command in (["run"], ["sql"], ["runs"], ["label"], ["report"], ["export"], ["mine", "shortest"],
                    ["mine", "backtrack"], ["eval", "labels"], ["eval", "processbench"], ["submit"],
                    ["status"], ["logs"], ["perturb"], ["train-prm"], ["score"], ["validate"]):
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0 and "Example: tracemill" in result.output, command


def test_sim_run_then_sql_in_every_format_and_runs_listing(tmp_path):
    cfg = _config(tmp_path, '[problems]\nn = 4\n[engine]\nbackend = "sim"\n[ray]\nnum_cpus = 2\n')
    result = runner.invoke(app, ["run", "-c", str(cfg), "--run-id", "cli-1", "--no-progress", "--no-report"])
    assert result.exit_code == 0, result.output
    assert "tracemill sql" in result.output and "answer accuracy" in result.output
    root = str(tmp_path / "data")
    query = "SELECT count(*) AS n FROM problems"
    out = runner.invoke(app, ["sql", query, "--root", root, "--format", "json"])
    assert json.loads(out.output.strip()) == {"n": 4}
    out = runner.invoke(app, ["sql", query, "--root", root, "--format", "csv"])
    assert out.output.split() == ['"n"', "4"]
    out = runner.invoke(app, ["sql", "SELECT * FROM no_such_table", "--root", root])
    assert out.exit_code == 2 and "query failed" in out.output
    out = runner.invoke(app, ["runs", "--root", root, "--format", "json"])
    rows = [json.loads(line) for line in out.output.splitlines()]
    assert [(r["run_id"], r["status"]) for r in rows] == [("cli-1", "finished")]
    again = runner.invoke(app, ["run", "-c", str(cfg), "--resume", "cli-1", "--no-progress", "--no-report"])
    assert again.exit_code == 0 and "shards already committed" in again.output
    assert "validate cli-1: ok" in again.output
    scores = runner.invoke(app, ["eval", "labels", "cli-1", "--root", root, "--format", "json"])
    by_strategy = json.loads(scores.output)
    assert list(by_strategy) == ["linear"] and 0 <= by_strategy["linear"]["f1"] <= 1
    table = runner.invoke(app, ["eval", "labels", "cli-1", "--root", root])
    assert table.exit_code == 0 and "linear" in table.output and "f1" in table.output


@pytest.mark.parametrize("command", [
    ["export", "nope", "--out", "{tmp}/export"], ["mine", "shortest", "nope"], ["mine", "backtrack", "nope"],
    ["report", "nope"], ["eval", "labels", "nope"], ["validate", "nope"], ["export", "../x", "--out", "{tmp}/e"],
])
def test_an_unknown_run_id_is_one_line_exit_2_and_writes_nothing(tmp_path, command):
    root = tmp_path / "data"
    (root / "runs").mkdir(parents=True)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = runner.invoke(app, [*(c.format(tmp=tmp_path) for c in command), "--root", str(root)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "run" in lines[0], result.output
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
