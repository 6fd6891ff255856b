"""Catalog: views over committed files of several runs, per-run queries, run listing, the saved catalog file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage import catalog as catalog_module
from storage.catalog import Catalog
from storage.layout import RunPaths
from storage.manifest import Manifest
from storage.runs import finish_run, start_run
from storage.schemas import TABLES
from storage.shards import ShardWriter


def write_run(root, run_id: str, problems: list[str]) -> None:
    with ShardWriter(root, run_id) as w:
        for i, p in enumerate(problems):
            w.commit(f"s{i}", {"problems": [{"problem_id": p}], "nodes": [{"node_id": f"{p}-a", "problem_id": p}]})


def count(cat: Catalog, table: str, run_id: str | None = None) -> int:
    return cat.sql(f"SELECT count(*) AS n FROM {table}", run_id=run_id)["n"][0].as_py()


def test_empty_root_has_every_view_with_schema_columns(tmp_path):
    with Catalog(tmp_path) as cat:
        for name, schema in TABLES.items():
            got = cat.sql(f"SELECT * FROM {name}")
            assert got.num_rows == 0
            assert got.schema.names == schema.names
        assert cat.sql("SELECT * FROM solutions").schema.field("node_ids").type == pa.list_(pa.string())
        assert cat.runs().num_rows == 0


def test_views_cover_all_runs_and_run_id_restricts_them(tmp_path):
    write_run(tmp_path, "a", ["p1", "p2"])
    write_run(tmp_path, "b", ["p3"])
    with Catalog(tmp_path) as cat:
        assert count(cat, "problems") == 3
        assert count(cat, "problems", run_id="a") == 2
        joined = cat.sql("SELECT DISTINCT n.run_id FROM nodes n JOIN problems p USING (problem_id)", run_id="b")
        assert joined["run_id"].to_pylist() == ["b"]
        assert count(cat, "problems", run_id="never-ran") == 0
        assert count(cat, "problems") == 3  # the per-run views are gone after the call


def test_union_by_name_reads_files_written_before_a_column_existed(tmp_path):
    write_run(tmp_path, "new", ["p1"])
    old = RunPaths(tmp_path, "old")
    old.table_dir("problems").mkdir(parents=True)
    pq.write_table(pa.table({"run_id": ["old"], "problem_id": ["p0"]}), old.shard_file("problems", "s0"))
    manifest = Manifest.load(old)
    manifest.add("s0", {"problems": 1}, old)
    manifest.save(old)
    with Catalog(tmp_path) as cat:
        rows = cat.sql("SELECT run_id, problem_id, question FROM problems ORDER BY run_id").to_pylist()
    assert rows == [
        {"run_id": "new", "problem_id": "p1", "question": None},
        {"run_id": "old", "problem_id": "p0", "question": None},
    ]


def test_refresh_shows_shards_committed_after_open(tmp_path):
    write_run(tmp_path, "a", ["p1"])
    with Catalog(tmp_path) as cat:
        write_run(tmp_path, "b", ["p2"])
        assert count(cat, "problems") == 1
        assert count(cat, "problems", run_id="b") == 1  # per-run queries read the current manifest
        cat.refresh()
        assert count(cat, "problems") == 2


def test_runs_lists_status_and_row_counts(tmp_path):
    start_run(tmp_path, "a", {"k": 1}, model="m", engine="sim")
    write_run(tmp_path, "a", ["p1", "p2"])
    finish_run(tmp_path, "a", {"problems": 2})
    write_run(tmp_path, "b", ["p3"])  # shards but no runs row yet
    with Catalog(tmp_path) as cat:
        runs = {r["run_id"]: r for r in cat.runs().to_pylist()}
        assert runs["a"]["status"] == "finished" and runs["a"]["model"] == "m"
        assert (runs["a"]["n_shards"], runs["a"]["rows_problems"], runs["a"]["rows_nodes"]) == (2, 2, 2)
        assert runs["a"]["rows_step_labels"] == 0
        assert runs["b"]["status"] is None and runs["b"]["rows_problems"] == 1
        assert str(runs["a"]["started_at"].tzinfo) == "UTC"
        assert cat.sql("SELECT status FROM runs", run_id="a")["status"].to_pylist() == ["finished"]


def test_saved_catalog_file_has_the_views(tmp_path, monkeypatch):
    write_run(tmp_path, "a", ["p1"])
    with Catalog(tmp_path, save=False) as cat:
        assert not cat.refresh() and not cat.path.exists()
    Catalog(tmp_path).close()
    monkeypatch.chdir(tmp_path)
    with duckdb.connect("catalog.duckdb", read_only=True) as con:
        assert con.sql("SELECT problem_id FROM problems").fetchall() == [("p1",)]
        assert con.sql("SELECT count(*) FROM step_labels").fetchall() == [(0,)]


def _committed_root(root: Path) -> Path:
    start_run(root, "a", {"k": 1}, engine="sim")
    write_run(root, "a", ["p1", "p2"])
    finish_run(root, "a", {"problems": 2})
    Catalog(root).close()
    return root


def test_copied_root_keeps_a_working_catalog_file_after_the_original_is_gone(tmp_path, monkeypatch):
    original = _committed_root(tmp_path / "root")
    copy = tmp_path / "other"
    shutil.copytree(original, copy)
    shutil.rmtree(original)
    monkeypatch.chdir(copy)
    with duckdb.connect("catalog.duckdb", read_only=True) as con:
        assert con.sql("SELECT problem_id FROM problems ORDER BY 1").fetchall() == [("p1",), ("p2",)]
        assert con.sql("SELECT status FROM runs").fetchall() == [("finished",)]
    monkeypatch.chdir(tmp_path)  # elsewhere: the data root is named as the search path for relative files
    with duckdb.connect(str(copy / "catalog.duckdb"), read_only=True,
                        config={"file_search_path": str(copy)}) as con:
        assert con.sql("SELECT count(*) FROM nodes").fetchall() == [(2,)]


def test_catalog_file_is_rewritten_only_when_its_views_change(tmp_path):
    root = _committed_root(tmp_path)
    before = (root / "catalog.duckdb").stat().st_mtime_ns, (root / "catalog.duckdb").read_bytes()
    with Catalog(root) as cat:
        assert not cat.refresh()
        assert ((root / "catalog.duckdb").stat().st_mtime_ns, (root / "catalog.duckdb").read_bytes()) == before
        write_run(root, "b", ["p3"])
        assert cat.refresh()
    with duckdb.connect(str(root / "catalog.duckdb"), read_only=True, config={"file_search_path": str(root)}) as con:
        assert con.sql("SELECT count(*) FROM problems").fetchall() == [(3,)]


@contextmanager
def _unwritable(*paths: Path) -> Iterator[None]:
    """Make ``paths`` unwritable for this process: modes for a normal user, the immutable flag for root (whom
    modes do not stop). Skips the test where neither works (no ``chattr``, or a filesystem without the flag)."""
    as_root = os.geteuid() == 0
    changed: list[Path] = []
    try:
        for p in paths:
            if not as_root:
                p.chmod(0o555 if p.is_dir() else 0o444)
            elif shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(p)]).returncode:
                pytest.skip("running as root without a working chattr: cannot make a folder unwritable")
            changed.append(p)
        probe = paths[0] / "probe"
        try:
            probe.touch()
        except OSError:
            pass
        else:
            probe.unlink()
            pytest.skip(f"{paths[0]} stayed writable")
        yield
    finally:
        for p in changed:
            if as_root:
                subprocess.run(["chattr", "-i", str(p)], check=True)
            else:
                p.chmod(0o755 if p.is_dir() else 0o644)


def test_unwritable_root_is_queried_and_its_catalog_file_left_alone(tmp_path):
    write_run(tmp_path, "a", ["p1"])
    with _unwritable(tmp_path), warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to say: no saved catalog to go stale
        with Catalog(tmp_path) as cat:
            assert count(cat, "problems") == 1 and not cat.refresh()
    assert not (tmp_path / "catalog.duckdb").exists()


def test_unwritable_root_with_a_stale_catalog_file_warns(tmp_path):
    root = _committed_root(tmp_path)
    with _unwritable(root, root / "catalog.duckdb"), warnings.catch_warnings():
        warnings.simplefilter("error")
        Catalog(root).close()  # up to date: silent
    write_run(root, "b", ["p3"])
    with _unwritable(root, root / "catalog.duckdb"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Catalog(root) as cat:
            assert count(cat, "problems") == 3
    assert [str(w.message) for w in caught] == [f"{root / 'catalog.duckdb'} is not writable; its saved views are "
                                                "out of date"]


def test_locked_catalog_file_warns_and_queries_still_work(tmp_path, monkeypatch):
    write_run(tmp_path, "a", ["p1"])
    Catalog(tmp_path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
         "sys.stdin.read()", str(tmp_path / "catalog.duckdb")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(catalog_module, "PERSIST_BACKOFF_S", 0.0)
        write_run(tmp_path, "b", ["p2"])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with Catalog(tmp_path) as cat:
                assert count(cat, "problems") == 2
        assert any("locked by another process" in str(w.message) for w in caught)
    finally:
        holder.communicate("")


def test_sql_takes_parameters(tmp_path):
    write_run(tmp_path, "a", ["p1", "p2"])
    with Catalog(tmp_path) as cat:
        got = cat.sql("SELECT problem_id FROM problems WHERE problem_id = $p", params={"p": "p2"})
        assert got["problem_id"].to_pylist() == ["p2"]
        with pytest.raises(duckdb.CatalogException):
            cat.sql("SELECT * FROM no_such_view")
