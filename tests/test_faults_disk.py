"""A full disk, for real (a small tmpfs filled up): no write leaves a partial or half-committed shard, a run
that hits ENOSPC says so in one line, exits 1 and is marked failed, and ``--resume`` after space is freed
completes it exactly once (the same rows as an undisturbed run, as after SIGKILL in test_resume.py)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import duckdb
import pytest

from storage.catalog import Catalog
from storage.layout import RunPaths
from storage.manifest import Manifest
from storage.runs import fail_run, read_run, start_run
from storage.shards import ShardWriter
from tests.mounts import fill, small_disk, snapshot


def _problems(prefix: str, n: int) -> list[dict]:
    return [{"problem_id": f"{prefix}{i}", "question": "q " * 200} for i in range(n)]


def _count(root: Path, table: str = "problems") -> list[dict]:
    with Catalog(root, save=False) as cat:
        return cat.sql(f"SELECT count(*) AS n, count(DISTINCT problem_id) AS d FROM {table}").to_pylist()


@pytest.fixture
def disk(tmp_path):
    with small_disk(tmp_path / "disk", "4m") as mounted:
        yield mounted


def test_commit_on_a_full_disk_changes_nothing_then_commits_exactly_once(disk):
    root = disk / "data"
    w = ShardWriter(root, "r1")
    assert w.commit("s0", {"problems": _problems("a", 10)})
    runs_before = snapshot(root / "runs")
    ballast = fill(disk)
    with pytest.raises(OSError) as err:
        w.commit("s1", {"problems": _problems("b", 10), "nodes": [{"node_id": "n", "problem_id": "b0"}]})
    assert err.value.errno == errno.ENOSPC
    assert snapshot(root / "runs") == runs_before  # no new file in a table folder, the manifest unchanged
    assert [p for p in (root / "staging").rglob("*") if p.is_file()] == []  # nothing staged left holding space
    assert _count(root) == [{"n": 10, "d": 10}]

    ballast.unlink()
    assert w.commit("s1", {"problems": _problems("b", 10), "nodes": [{"node_id": "n", "problem_id": "b0"}]})
    assert not w.commit("s1", {"problems": _problems("b", 10)})
    assert _count(root) == [{"n": 20, "d": 20}]
    assert _count(root, "nodes") == [{"n": 1, "d": 1}]


def test_space_running_out_at_the_manifest_write_leaves_no_file_of_the_shard(tmp_path, monkeypatch):
    """The disk fills between the shard's files and its manifest (the last write): nothing may be visible."""
    root = tmp_path / "data"
    w = ShardWriter(root, "r1")
    w.replace("datasets", {"traces": [{"trace_id": "t1", "problem_id": "p1"}],
                           "filtered": [{"row_id": "f1", "problem_id": "p1"}]})
    before = snapshot(root / "runs")

    def no_space(self, paths):  # noqa: ANN001 - Manifest.stage's signature
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(paths.manifest))

    with monkeypatch.context() as m:
        m.setattr(Manifest, "stage", no_space)
        with pytest.raises(OSError, match="No space left"):
            w.commit("s1", {"problems": _problems("b", 3)})
        with pytest.raises(OSError, match="No space left"):
            w.replace("datasets", {"traces": [{"trace_id": "t2", "problem_id": "p2"}]})
    assert snapshot(root / "runs") == before  # no stray shard file, the old datasets (both tables) intact
    with Catalog(root, save=False) as cat:
        assert cat.sql("SELECT trace_id FROM traces").to_pylist() == [{"trace_id": "t1"}]


FILE_TOO_LARGE = """
import os, resource, signal, sys
from storage.layout import is_disk_full
from storage.shards import ShardWriter
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))
try:
    ShardWriter(sys.argv[1], "r1").commit("s1", {"problems": [{"problem_id": f"b{i}", "question": os.urandom(1000).hex()}
                                                             for i in range(200)]})
except OSError as err:
    print(err.errno, is_disk_full(err))
"""


def test_a_file_size_limit_fails_a_commit_like_a_full_disk(tmp_path):
    """EFBIG (RLIMIT_FSIZE, no mount needed) is handled as a full disk: nothing visible, committed later."""
    root = tmp_path / "data"
    assert ShardWriter(root, "r1").commit("s0", {"problems": _problems("a", 3)})
    before = snapshot(root / "runs")
    out = subprocess.run([sys.executable, "-c", FILE_TOO_LARGE, str(root)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert out.stdout.split() == [str(errno.EFBIG), "True"], out.stdout + out.stderr
    assert snapshot(root / "runs") == before
    assert [p for p in (root / "staging").rglob("*") if p.is_file()] == []
    big = [{"problem_id": f"b{i}", "question": os.urandom(1000).hex()} for i in range(200)]  # ~200 KB compressed
    assert ShardWriter(root, "r1").commit("s1", {"problems": big})
    assert _count(root) == [{"n": 203, "d": 203}]


def test_replace_on_a_full_disk_keeps_the_old_version(disk):
    root = disk / "data"
    w = ShardWriter(root, "r1")
    w.replace("datasets", {"traces": [{"trace_id": "t1", "problem_id": "p1"}]})
    before = snapshot(root / "runs")
    ballast = fill(disk)
    with pytest.raises(OSError, match="No space left"):
        w.replace("datasets", {"traces": [{"trace_id": f"t{i}", "problem_id": "p2", "text": "x" * 500}
                                          for i in range(50)]})
    assert snapshot(root / "runs") == before
    ballast.unlink()
    assert w.replace("datasets", {"traces": [{"trace_id": "t9", "problem_id": "p9"}]})
    with Catalog(root, save=False) as cat:
        assert cat.sql("SELECT trace_id FROM traces").to_pylist() == [{"trace_id": "t9"}]


def test_a_run_that_filled_the_disk_is_still_marked_failed(disk):
    root = disk / "data"
    start_run(root, "r1", {"name": "x"})
    assert RunPaths(root, "r1").reserve.stat().st_size > 0
    ballast = fill(disk)
    fail_run(root, "r1", "OSError: [Errno 28] No space left on device", {"problems": 3})  # the reserve pays for it
    record = read_run(root, "r1")
    assert record.status == "failed" and "No space left" in json.loads(record.stats_json)["error"]
    assert not RunPaths(root, "r1").reserve.exists()
    with pytest.raises(OSError, match="No space left"):  # resuming while still full: fails before any write
        start_run(root, "r1", {"name": "x"})
    assert read_run(root, "r1").status == "failed"
    ballast.unlink()
    assert start_run(root, "r1", {"name": "x"}).status == "running"


@pytest.mark.parametrize("saved_before", [False, True])
def test_saving_the_catalog_on_a_full_disk_warns_and_recovers(disk, saved_before):
    root = disk / "data"
    with ShardWriter(root, "r1") as w:
        w.commit("s0", {"problems": _problems("a", 3)})
    if saved_before:
        with Catalog(root):
            pass
        with ShardWriter(root, "r1") as w:
            w.commit("s1", {"problems": _problems("b", 2)})
    ballast = fill(disk)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Catalog(root) as cat:
            assert cat.sql("SELECT count(*) AS n FROM problems").to_pylist() == [{"n": 5 if saved_before else 3}]
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "catalog.duckdb not updated" in messages[0] and "No space left" in messages[0]
    assert (root / "catalog.duckdb").exists() == saved_before  # a catalog the failed save began is removed
    ballast.unlink()
    with Catalog(root):
        pass
    con = duckdb.connect(str(root / "catalog.duckdb"), read_only=True, config={"file_search_path": str(root)})
    assert con.sql("SELECT count(*) FROM problems").fetchall() == [(5 if saved_before else 3,)]
    con.close()


CONFIG = """
name = "disk"
[problems]
n = 24
mix = {{ 2 = 0.5, 4 = 0.5 }}
[engine]
backend = "sim"
num_cpus = 1
options = {{ latency_per_request_s = 0.05 }}
[labeling]
strategy = "binary"
[mining]
kinds = ["shortest"]
datasets = false
[storage]
root = "{root}"
shard_size = 4
[ray]
num_cpus = 2
"""
TABLES = ("problems", "solutions", "nodes", "rollouts", "step_labels", "traces", "rejects")


def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", "--no-progress", "--no-report", *args],
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0",
                                 "PYTHONPATH": str(Path(__file__).resolve().parents[1])})


def _committed(root: Path, run_id: str) -> int:
    try:
        return len(json.loads((root / "runs" / run_id / "manifest.json").read_text())["shards"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def _tables(root: Path, run_id: str) -> dict[str, int]:
    with Catalog(root, save=False) as cat:
        return {t: cat.sql(f"SELECT count(*) AS c FROM {t}", run_id=run_id).column("c")[0].as_py() for t in TABLES}


@pytest.mark.slow
def test_full_disk_mid_run_fails_in_one_line_and_resumes_exactly_once(tmp_path, disk):
    reference_root, root = tmp_path / "reference", disk / "data"
    (tmp_path / "ref.toml").write_text(CONFIG.format(root=reference_root))
    (tmp_path / "disk.toml").write_text(CONFIG.format(root=root))
    ref = _cli("-c", str(tmp_path / "ref.toml"), "--run-id", "run")
    out, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, out[-2000:] + err[-2000:]

    victim = _cli("-c", str(tmp_path / "disk.toml"), "--run-id", "run")
    deadline = time.monotonic() + 240
    while _committed(root, "run") < 2:
        assert victim.poll() is None and time.monotonic() < deadline, "run ended before the disk filled"
        time.sleep(0.05)
    ballast = fill(disk)
    out, err = victim.communicate(timeout=300)
    assert victim.returncode == 1, out[-2000:] + err[-2000:]
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "--resume run" in errors[0], err
    record = read_run(root, "run")
    assert record.status == "failed" and "No space left" in json.loads(record.stats_json)["error"]
    done_before = _committed(root, "run")
    assert done_before < 7, "the run finished before the disk filled; nothing left to resume"

    ballast.unlink()
    resumed = _cli("-c", str(tmp_path / "disk.toml"), "--resume", "run")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out[-2000:] + err[-2000:]
    assert _committed(root, "run") == 7  # 6 problem shards + the mined traces
    assert _tables(root, "run") == _tables(reference_root, "run")
    assert _count(root) == [{"n": 24, "d": 24}]
    assert read_run(root, "run").status == "finished"


def test_fill_really_fills(disk):
    """The helper the tests above rely on: after ``fill`` not one more byte fits."""
    fill(disk)
    with pytest.raises(OSError) as err, open(disk / "one-more", "wb", buffering=0) as f:
        f.write(b"x" * 4096)
    assert err.value.errno == errno.ENOSPC
