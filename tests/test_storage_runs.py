"""The runs row (running -> finished | failed) and reject rows."""

from __future__ import annotations

import json

import pytest

from storage.catalog import Catalog
from storage.rejects import REJECT_ROW_BYTES, TRUNCATION_MARK, reject_row
from storage.runs import RunRecord, config_hash, fail_run, finish_run, read_run, start_run
from storage.shards import ShardWriter


def test_run_goes_running_then_finished_with_stats(tmp_path):
    started = start_run(tmp_path, "r1", {"b": 2, "a": 1}, model="qwen", engine="vllm", code_version="abc")
    assert read_run(tmp_path, "r1") == started
    assert started.status == "running" and started.finished_at is None
    done = finish_run(tmp_path, "r1", {"problems": 3})
    assert done.status == "finished" and done.finished_at >= done.started_at
    assert json.loads(read_run(tmp_path, "r1").stats_json) == {"problems": 3}
    assert read_run(tmp_path, "r1").config_json == '{"a":1,"b":2}'


def test_failed_run_keeps_the_error(tmp_path):
    start_run(tmp_path, "r1", {})
    fail_run(tmp_path, "r1", "engine died", {"problems": 1})
    record = read_run(tmp_path, "r1")
    assert record.status == "failed"
    assert json.loads(record.stats_json) == {"problems": 1, "error": "engine died"}


def test_resume_keeps_start_time_and_refuses_another_config(tmp_path):
    first = start_run(tmp_path, "r1", {"k": 1})
    fail_run(tmp_path, "r1", "oom")
    again = start_run(tmp_path, "r1", {"k": 1})
    assert again.started_at == first.started_at and again.status == "running"
    with pytest.raises(ValueError, match="was started with config"):
        start_run(tmp_path, "r1", {"k": 2})


def test_one_runs_row_per_run_in_the_catalog(tmp_path):
    start_run(tmp_path, "r1", {})
    finish_run(tmp_path, "r1")
    with Catalog(tmp_path) as cat:
        assert cat.sql("SELECT run_id, status FROM runs").to_pylist() == [{"run_id": "r1", "status": "finished"}]


def test_config_hash_ignores_key_order_and_finish_needs_a_start(tmp_path):
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    with pytest.raises(ValueError, match="never started"):
        finish_run(tmp_path, "nope")
    with pytest.raises(ValueError, match="status"):
        RunRecord("r", "{}", "h", None, None, None, None, None, "done", None)


def test_reject_row_truncates_to_the_byte_limit_on_a_character_boundary():
    long = "é" * REJECT_ROW_BYTES  # 2 bytes each
    row = reject_row("load", "f.jsonl:3", long, "too long")["row"]
    assert len(row.encode()) <= REJECT_ROW_BYTES and row.endswith(TRUNCATION_MARK)
    assert set(row.removesuffix(TRUNCATION_MARK)) == {"é"}
    assert reject_row("load", "f.jsonl:4", {"q": 1}, "no answer")["row"] == '{"q": 1}'
    assert reject_row("load", "f", "short", "x", limit=100)["row"] == "short"


def test_reject_row_spells_lone_surrogates_so_parquet_can_store_it():
    row = reject_row("load", "f.jsonl:\ud800", "q \ud800", "bad \udfff")
    assert (row["source"], row["row"], row["reason"]) == ("f.jsonl:\\ud800", "q \\ud800", "bad \\udfff")


def test_rejects_are_committed_with_their_shard(tmp_path):
    rejects = [reject_row("label", "p1", {"node": "a"}, "verifier timeout")]
    with ShardWriter(tmp_path, "r1") as w:
        w.commit("s0", {"nodes": [{"node_id": "b"}], "rejects": rejects})
    with Catalog(tmp_path) as cat:
        got = cat.sql("SELECT run_id, stage, source, reason FROM rejects").to_pylist()
    assert got == [{"run_id": "r1", "stage": "label", "source": "p1", "reason": "verifier timeout"}]
