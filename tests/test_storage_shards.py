"""Shard commits: round trips, exactly-once under crashes and re-commits, schema errors, staging hygiene."""

from __future__ import annotations

import os
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage import shards as shards_module
from storage.catalog import Catalog
from storage.layout import MANIFEST, RunPaths
from storage.manifest import Manifest, committed_files
from storage.schemas import TABLES
from storage.shards import ShardWriter, committed_shards
from storage.tables import SchemaError, conform


def labels(problem: str, n: int) -> list[dict]:
    return [
        {"node_id": f"{problem}-n{i}", "problem_id": problem, "strategy": "linear", "n": 8, "n_correct": i % 9,
         "value": (i % 9) / 8, "hard": i % 9 > 0, "soft": (i % 9) / 8, "label_source": "mc"}
        for i in range(n)
    ]


def sorted_rows(table: pa.Table, key: str) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda r: r[key])


def test_commit_round_trips_through_catalog(tmp_path):
    rows = labels("p1", 50) + labels("p2", 30)
    problems = pa.table({"problem_id": ["p1", "p2"], "question": ["1+1?", "2+2?"], "gold_answer": ["2", "4"]})
    with ShardWriter(tmp_path, "r1") as w:
        assert w.commit("batch-0", {"step_labels": rows[:40], "problems": problems})
        assert w.commit("batch-1", {"step_labels": rows[40:]})
    with Catalog(tmp_path) as cat:
        got = cat.sql("SELECT * FROM step_labels")
        assert got.schema == TABLES["step_labels"]
        assert sorted_rows(got, "node_id") == sorted_rows(conform("step_labels", rows, "r1"), "node_id")
        p = cat.sql("SELECT * FROM problems ORDER BY problem_id").to_pylist()
    assert [r["gold_answer"] for r in p] == ["2", "4"]
    assert p[0]["source"] is None and p[0]["run_id"] == "r1"  # missing nullable column -> null; run id filled


def test_committed_shard_is_skipped_and_writes_nothing(tmp_path):
    with ShardWriter(tmp_path, "r1") as w:
        assert w.commit("s", {"step_labels": labels("p", 5)})
        before = (RunPaths(tmp_path, "r1").shard_file("step_labels", "s")).stat().st_mtime_ns
        assert not w.commit("s", {"step_labels": labels("p", 7)})
        assert not ShardWriter(tmp_path, "r1").commit("s", {"step_labels": labels("p", 7)})
    assert committed_shards(tmp_path, "r1") == {"s"}
    assert RunPaths(tmp_path, "r1").shard_file("step_labels", "s").stat().st_mtime_ns == before
    with Catalog(tmp_path) as cat:
        assert cat.sql("SELECT count(*) AS n FROM step_labels")["n"][0].as_py() == 5


def crash_on_manifest_save(monkeypatch):
    """A kill after the shard's files are renamed into place, just before the manifest's own rename."""
    rename = shards_module.replace_synced

    def boom(src, dest):
        if dest.name == MANIFEST:
            raise OSError("killed before the manifest update")
        rename(src, dest)

    monkeypatch.setattr(shards_module, "replace_synced", boom)


def test_crash_between_rename_and_manifest_then_recommit_has_no_duplicates(tmp_path, monkeypatch):
    w = ShardWriter(tmp_path, "r1")
    assert w.commit("s0", {"step_labels": labels("p0", 10)})
    with monkeypatch.context() as m:
        crash_on_manifest_save(m)
        with pytest.raises(OSError, match="killed"):
            w.commit("s1", {"step_labels": labels("p1", 10), "problems": [{"problem_id": "p1"}]})
    paths = RunPaths(tmp_path, "r1")
    assert paths.shard_file("step_labels", "s1").exists()  # renamed into place, but not committed
    assert committed_shards(tmp_path, "r1") == {"s0"}
    with Catalog(tmp_path) as cat:  # readers never see the uncommitted shard
        assert cat.sql("SELECT count(*) AS n FROM step_labels")["n"][0].as_py() == 10
        assert cat.sql("SELECT count(*) AS n FROM problems")["n"][0].as_py() == 0
    assert w.commit("s1", {"step_labels": labels("p1", 10)})  # the retry writes no problems this time
    assert not paths.shard_file("problems", "s1").exists()
    with Catalog(tmp_path) as cat:
        assert cat.sql("SELECT count(*) AS n, count(DISTINCT node_id) AS d FROM step_labels").to_pylist() == [
            {"n": 20, "d": 20}
        ]
        assert cat.sql("SELECT count(*) AS n FROM problems")["n"][0].as_py() == 0


def test_new_writer_deletes_files_of_uncommitted_shards(tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        crash_on_manifest_save(m)
        with pytest.raises(OSError):
            ShardWriter(tmp_path, "r1").commit("s1", {"nodes": [{"node_id": "a"}]})
    stray = RunPaths(tmp_path, "r1").shard_file("nodes", "s1")
    assert stray.exists()
    ShardWriter(tmp_path, "r1").close()
    assert not stray.exists()


def test_schema_violations_raise_before_any_file_is_written(tmp_path):
    w = ShardWriter(tmp_path, "r1")
    cases = [
        ({"step_labels": [{"node_id": "a", "valeu": 0.5}]}, r"unknown columns \['valeu'\]"),
        ({"step_labels": pa.table({"node_id": ["a"], "bogus": [1]})}, r"unknown columns \['bogus'\]"),
        ({"step_labels": [{"node_id": "a", "n": "many"}]}, "step_labels"),
        ({"step_labels": pa.table({"n": ["many"]})}, r"step_labels\.n: cannot cast string to int32"),
        ({"no_such_table": []}, "unknown table 'no_such_table'"),
        ({"nodes": [{"run_id": "other", "node_id": "a"}]}, "written to run 'r1'"),
        ({"runs": [{"status": "running"}]}, "storage.runs"),
    ]
    for tables, message in cases:
        with pytest.raises(SchemaError, match=message):
            w.commit("bad", {"problems": [{"problem_id": "ok"}], **tables})
    assert committed_shards(tmp_path, "r1") == set()
    assert not RunPaths(tmp_path, "r1").table_dir("problems").exists()


def test_invalid_names_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="run_id"):
        ShardWriter(tmp_path, "../escape")
    with pytest.raises(ValueError, match="shard name"):
        ShardWriter(tmp_path, "r1").commit("a/b", {})


def test_empty_shard_is_recorded_without_files(tmp_path):
    with ShardWriter(tmp_path, "r1") as w:
        assert w.commit("empty", {"step_labels": [], "nodes": pa.table({"node_id": pa.array([], pa.string())})})
        assert not w.commit("empty", {"step_labels": labels("p", 3)})
    assert committed_shards(tmp_path, "r1") == {"empty"}
    assert committed_files(tmp_path, "r1") == {}


def test_concurrent_writers_of_one_run_all_land_in_the_manifest(tmp_path):
    def work(i: int) -> None:
        with ShardWriter(tmp_path, "r1") as w:
            for j in range(4):
                w.commit(f"w{i}-{j}", {"step_labels": labels(f"p{i}{j}", 3)})

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(committed_shards(tmp_path, "r1")) == 16
    assert sum(pq.read_metadata(p).num_rows for p in committed_files(tmp_path, "r1")["step_labels"]) == 48


def test_writer_staging_is_removed_on_close_and_dead_writers_staging_swept(tmp_path):
    paths = RunPaths(tmp_path, "r1")
    dead = paths.staging / "999999999-deadbeef" / "nodes"
    dead.mkdir(parents=True)
    (dead / "x.parquet").write_bytes(b"partial")
    alive = paths.staging / f"{os.getpid()}-0000live"
    alive.mkdir()
    with ShardWriter(tmp_path, "r1") as w:
        w.commit("s", {"nodes": [{"node_id": "a"}]})
    assert sorted(p.name for p in paths.staging.iterdir()) == [alive.name]


def test_write_rows_commits_a_single_table_shard(tmp_path):
    with ShardWriter(tmp_path, "r1") as w:
        assert w.write_rows("rejects", "rejects-load", [{"stage": "load", "reason": "no answer"}])
    assert [p.name for p in committed_files(tmp_path, "r1")["rejects"]] == ["rejects-load.parquet"]


def test_replace_swaps_a_derived_shard_and_an_identical_rebuild_touches_nothing(tmp_path):
    problems = [{"problem_id": "p1", "question": "1+1?", "gold_answer": "2"}]
    paths = RunPaths(tmp_path, "r1")
    with ShardWriter(tmp_path, "r1") as w:
        assert w.replace("derived", {"step_labels": labels("p1", 10), "problems": problems})
        first = paths.shard_file("step_labels", "derived").stat().st_mtime_ns
        assert not w.replace("derived", {"step_labels": labels("p1", 10), "problems": problems})
        assert paths.shard_file("step_labels", "derived").stat().st_mtime_ns == first
        assert w.replace("derived", {"step_labels": labels("p1", 4)})  # fewer rows, and no problems table
    assert not paths.shard_file("problems", "derived").exists()
    assert Manifest.load(paths).rows() == {"step_labels": 4}
    with Catalog(tmp_path) as cat:
        assert cat.sql("SELECT count(*) AS n FROM step_labels").to_pylist() == [{"n": 4}]
        assert cat.sql("SELECT count(*) AS n FROM problems").to_pylist() == [{"n": 0}]
