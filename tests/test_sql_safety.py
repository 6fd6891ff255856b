"""``tracemill sql`` is read-only: the attacks of issue 13 fail with one line and exit 2, and every file of the
data root is byte-identical afterwards; queries (and ``--unsafe``) still work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from storage.catalog import Catalog, QueryRefused
from storage.layout import RunPaths
from storage.runs import finish_run, start_run
from storage.shards import ShardWriter
from tests.mounts import snapshot


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A root with two finished runs of 3 problems each and a saved catalog.duckdb; a secret file beside it."""
    base = tmp_path_factory.mktemp("sql")
    root = base / "data"
    for rid in ("a", "b"):
        start_run(root, rid, {"name": rid}, engine="sim")
        with ShardWriter(root, rid) as w:
            w.commit("shard-000000", {
                "problems": [{"problem_id": f"{rid}{i}", "question": "1+1?", "gold_answer": "2"} for i in range(3)],
                "solutions": [{"solution_id": f"{rid}{i}-s", "problem_id": f"{rid}{i}", "correct": True}
                              for i in range(3)]})
        finish_run(root, rid, {"problems": 3})
    with Catalog(root):
        pass
    (base / "data2").mkdir()  # a sibling whose name starts like the root's
    (base / "data2" / "secret.csv").write_text("k,v\npassword,hunter2\n")
    (base / "outside.csv").write_text("k,v\ntoken,abc\n")
    return root


def _attacks(root: Path) -> dict[str, str]:
    paths = RunPaths(root, "a")
    shard = paths.shard_file("solutions", "shard-000000")
    return {
        "copy over a manifest": f"COPY (SELECT 1 AS x) TO '{paths.manifest}' (FORMAT json)",
        "copy over a committed shard": f"COPY (SELECT * FROM solutions WHERE false) TO '{shard}' (FORMAT parquet)",
        "attach creates a database": f"ATTACH '{root}/evil.duckdb' AS evil",
        "attach the saved catalog": f"ATTACH '{root}/catalog.duckdb' AS c",
        "read /etc/passwd": "SELECT * FROM read_csv('/etc/passwd')",
        "read outside through ..": f"SELECT * FROM read_csv('{root}/../outside.csv')",
        "read a sibling with the root's prefix": f"SELECT * FROM read_csv('{root}2/secret.csv')",
        "list files outside": "SELECT * FROM glob('/etc/*')",
        "unlock external access": "SET enable_external_access = true",
        "a second statement": f"SELECT 1; COPY (SELECT 2 AS x) TO '{paths.manifest}' (FORMAT json)",
        "install an extension": "INSTALL httpfs",
        "load an extension": "LOAD httpfs",
        "create a secret": "CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 'v')",
        "pragma": "PRAGMA threads = 1",
        "export the database": f"EXPORT DATABASE '{root}/dump'",
        "create a table": "CREATE TABLE t AS SELECT 1 AS x",
        "explain analyze runs a copy": f"EXPLAIN ANALYZE COPY (SELECT 1 AS x) TO '{paths.manifest}' (FORMAT json)",
    }


ATTACKS = list(_attacks(Path("/r")))


@pytest.mark.parametrize("attack", ATTACKS)
def test_attack_fails_with_one_line_and_changes_nothing(root, attack):
    before = snapshot(root.parent)
    out = _cli("sql", "--root", str(root), _attacks(root)[attack])
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), out.stderr
    assert out.stdout == ""  # no rows of anything printed
    assert snapshot(root.parent) == before  # every file byte-identical, and no new file anywhere


def test_refusal_happens_before_any_statement_runs(root):
    with Catalog(root, save=False, restricted=True) as cat:
        with pytest.raises(QueryRefused, match="COPY"):
            cat.sql(f"SELECT 1; COPY (SELECT 2 AS x) TO '{root.parent}/x.csv'")
        with pytest.raises(QueryRefused, match="ATTACH"):
            cat.sql("ATTACH ':memory:' AS m", run_id="a")
    assert not (root.parent / "x.csv").exists()


def test_queries_still_work_read_only(root):
    before = snapshot(root.parent)
    count = _cli("sql", "--root", str(root), "--format", "json", "SELECT count(*) AS n FROM problems")
    assert count.returncode == 0 and _rows(count) == [{"n": 6}], count.stderr
    per_run = _cli("sql", "--root", str(root), "--run", "b", "--format", "json",
                   "SELECT DISTINCT run_id FROM solutions")
    assert _rows(per_run) == [{"run_id": "b"}], per_run.stderr
    shard = RunPaths(root, "a").shard_file("problems", "shard-000000")
    inside = _cli("sql", "--root", str(root), "--format", "json", f"SELECT count(*) AS n FROM read_parquet('{shard}')")
    assert _rows(inside) == [{"n": 3}], inside.stderr  # files under the root stay readable
    for query in ("SHOW TABLES", "DESCRIBE problems", "WITH x AS (SELECT 1 AS y) SELECT * FROM x",
                  "EXPLAIN ANALYZE SELECT count(*) FROM problems"):
        assert _cli("sql", "--root", str(root), query).returncode == 0, query
    runs = _cli("runs", "--root", str(root), "--format", "json")
    assert [(r["run_id"], r["status"]) for r in _rows(runs)] == [("a", "finished"), ("b", "finished")]
    assert snapshot(root.parent) == before  # catalog.duckdb included: no read command saved it


def test_unsafe_opens_full_duckdb(root, tmp_path):
    target = tmp_path / "problems.csv"
    out = _cli("sql", "--root", str(root), "--unsafe", f"COPY problems TO '{target}' (HEADER)")
    assert out.returncode == 0, out.stderr
    assert len(target.read_text().splitlines()) == 7  # header + 6 problems
    outside = _cli("sql", "--unsafe", "--root", str(root), "--format", "json",
                   f"SELECT v FROM read_csv('{root.parent}/outside.csv')")
    assert _rows(outside) == [{"v": "abc"}], outside.stderr


def _rows(out: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in out.stdout.splitlines()]
