"""One bad manifest (corrupt, truncated, wrong types, a path outside its run) makes only its run unreadable:
named in a warning, while every other run on the root stays queryable, and no writer overwrites it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from storage.catalog import Catalog
from storage.layout import RunPaths
from storage.manifest import ManifestError
from storage.runs import finish_run, start_run
from storage.shards import ShardWriter


def _good_run(root: Path, rid: str, n: int) -> None:
    start_run(root, rid, {"name": rid})
    with ShardWriter(root, rid) as w:
        w.commit("s0", {"problems": [{"problem_id": f"{rid}-{i}"} for i in range(n)]})
    finish_run(root, rid)


def _valid_text(root: Path) -> str:
    return RunPaths(root, "bad").manifest.read_text()


def _damages(valid: str) -> dict[str, bytes]:
    def with_(change) -> bytes:  # noqa: ANN001 - a function editing a copy of the document
        copy = json.loads(valid)
        change(copy)
        return json.dumps(copy).encode()

    return {
        "corrupt json": b"{not json",
        "truncated": valid.encode()[: len(valid) // 2],
        "empty": b"",
        "binary": bytes(range(256)),
        "a list": b"[]",
        "no version": with_(lambda d: d.pop("version")),
        "shards is a list": with_(lambda d: d.update(shards=[])),
        "rows is a string": with_(lambda d: d["shards"]["s0"]["files"]["problems"].update(rows="3")),
        "path outside the run": with_(lambda d: d["shards"]["s0"]["files"]["problems"].update(path="../../x.parquet")),
        "unknown table": with_(lambda d: d["shards"]["s0"]["files"].update(nope=d["shards"]["s0"]["files"]["problems"])),
        "another run's": with_(lambda d: d.update(run_id="good1")),
        "files missing": with_(lambda d: d["shards"]["s0"].pop("files")),
        "deep nesting": b"[" * 200_000,
    }


@pytest.fixture
def root(tmp_path) -> Path:
    _good_run(tmp_path, "good1", 2)
    _good_run(tmp_path, "bad", 5)
    _good_run(tmp_path, "good2", 3)
    return tmp_path


def test_each_damage_hides_only_its_run_with_a_warning(root):
    manifest = RunPaths(root, "bad").manifest
    for name, damage in _damages(_valid_text(root)).items():
        manifest.write_bytes(damage)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with Catalog(root, save=False) as cat:
                rows = cat.sql("SELECT run_id, count(*) AS n FROM problems GROUP BY 1 ORDER BY 1").to_pylist()
                listed = cat.runs().column("run_id").to_pylist()
                with pytest.raises(ManifestError, match="manifest.json"):
                    cat.sql("SELECT count(*) FROM problems", run_id="bad")
        assert rows == [{"run_id": "good1", "n": 2}, {"run_id": "good2", "n": 3}], name
        assert listed == ["good1", "good2"], name
        messages = [str(w.message) for w in caught]
        assert len(messages) == 1 and "run bad skipped" in messages[0], (name, messages)
        with pytest.raises(ManifestError):  # a writer refuses it instead of starting the manifest afresh
            ShardWriter(root, "bad").commit("s1", {"problems": [{"problem_id": "x"}]})
        assert manifest.read_bytes() == damage, name


def test_a_damaged_run_row_file_hides_only_its_run(root):
    RunPaths(root, "bad").run_file.write_bytes(b"k,v\n1,2\n")  # what a COPY ... TO over it leaves
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Catalog(root, save=False) as cat:
            statuses = cat.sql("SELECT run_id, status FROM runs ORDER BY 1").to_pylist()
    assert statuses == [{"run_id": "good1", "status": "finished"}, {"run_id": "good2", "status": "finished"}]
    assert any("bad" in str(w.message) and "run.parquet" in str(w.message) for w in caught)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})


def test_cli_reads_the_other_runs_and_names_the_bad_one(root):
    RunPaths(root, "bad").manifest.write_text('{"version": 1, "run_id": "bad", "shards": {"s0": ')  # truncated
    runs = _cli("runs", "--root", str(root), "--format", "json")
    assert runs.returncode == 0, runs.stderr
    assert [json.loads(line)["run_id"] for line in runs.stdout.splitlines()] == ["good1", "good2"]
    assert runs.stderr.strip().startswith("warning: run bad skipped") and len(runs.stderr.strip().splitlines()) == 1
    total = _cli("sql", "--root", str(root), "--format", "json", "SELECT count(*) AS n FROM problems")
    assert total.returncode == 0 and json.loads(total.stdout) == {"n": 5}, total.stderr
    assert "run bad skipped" in total.stderr
    one = _cli("sql", "--root", str(root), "--run", "bad", "SELECT count(*) FROM problems")
    assert one.returncode == 1 and one.stderr.count("\n") == 1 and "manifest.json" in one.stderr, one.stderr
