"""Read commands on a read-only data root (a read-only bind mount: ``chmod`` does not stop root): ``sql``,
``runs``, ``report --out``, ``export`` of a run whose datasets are current and ``validate`` work, and no
file of the root changes, ``catalog.duckdb`` included. What must write says so in one line and exits 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.mounts import read_only_view, snapshot

pytestmark = pytest.mark.slow
CONFIG = """
name = "ro"
[problems]
n = 8
mix = {{ 2 = 0.5, 4 = 0.5 }}
[engine]
backend = "sim"
num_cpus = 1
[labeling]
strategy = "binary"
[mining]
kinds = ["shortest"]
[storage]
root = "{root}"
shard_size = 4
[ray]
num_cpus = 1
"""


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0",
                               "PYTHONPATH": str(Path(__file__).resolve().parents[1])})


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A data root holding one finished sim run (``r1``) with its datasets built."""
    base = tmp_path_factory.mktemp("ro")
    config = base / "ro.toml"
    config.write_text(CONFIG.format(root=base / "data"))
    out = _cli("run", "-c", str(config), "--run-id", "r1", "--no-progress", "--no-report")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return base / "data"


@pytest.fixture
def ro(data, tmp_path):
    with read_only_view(data, tmp_path / "ro") as view:
        yield view


def _one_error_line(out: subprocess.CompletedProcess) -> str:
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), out.stderr
    return lines[0]


def test_read_commands_work_and_change_nothing(data, ro, tmp_path):
    assert (ro / "catalog.duckdb").is_file()
    before, mtime = snapshot(data), (data / "catalog.duckdb").stat().st_mtime_ns
    sql = _cli("sql", "--root", str(ro), "--format", "json", "SELECT count(DISTINCT problem_id) AS n FROM problems")
    assert sql.returncode == 0 and json.loads(sql.stdout) == {"n": 8}, sql.stderr
    runs = _cli("runs", "--root", str(ro), "--format", "json")
    assert runs.returncode == 0 and json.loads(runs.stdout)["status"] == "finished", runs.stderr
    valid = _cli("validate", "r1", "--root", str(ro))
    assert valid.returncode == 0 and "ok" in valid.stdout, valid.stdout + valid.stderr
    report = _cli("report", "r1", "--root", str(ro), "--out", str(tmp_path / "report.html"))
    assert report.returncode == 0 and (tmp_path / "report.html").stat().st_size > 1000, report.stderr
    export = _cli("export", "r1", "--root", str(ro), "--out", str(tmp_path / "export"))
    assert export.returncode == 0, export.stderr  # no write lock taken: the datasets shard is up to date
    assert (tmp_path / "export" / "prm" / "train.parquet").is_file()
    assert snapshot(data) == before and (data / "catalog.duckdb").stat().st_mtime_ns == mtime

    again = _cli("export", "r1", "--root", str(data), "--out", str(tmp_path / "export_rw"))
    assert again.returncode == 0, again.stderr
    assert snapshot(tmp_path / "export") == snapshot(tmp_path / "export_rw")  # the same export as from a writable root


def test_commands_that_must_write_say_so_in_one_line(data, ro, tmp_path):
    before = snapshot(data)
    report = _cli("report", "r1", "--root", str(ro))  # its default place is inside the root
    assert report.returncode == 1 and "--out" in _one_error_line(report)
    rebuild = _cli("export", "r1", "--root", str(ro), "--out", str(tmp_path / "e"), "--after-error", "mask")
    assert rebuild.returncode == 1 and "Read-only file system" in _one_error_line(rebuild)  # datasets must change
    assert not (tmp_path / "e" / "prm").exists()
    assert snapshot(data) == before
