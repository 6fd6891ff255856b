"""Exactly-once output under a driver crash: SIGKILL ``tracemill run`` mid-run, ``--resume`` it, and compare
every table with an undisturbed run of the same config (the sim engine is deterministic per request).

The crash is injected at a fixed point (the run's one search worker kills the driver's process group right
after its second shard commit), not by a test racing a kill against the run finishing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from storage.catalog import Catalog

pytestmark = pytest.mark.slow
TABLES = ("problems", "solutions", "nodes", "rollouts", "step_labels", "traces", "rejects")
CONFIG = """
name = "resume"
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
search_workers = 1
"""
CRASH_AFTER_COMMITS = 2  # problem shards the crashing run commits before it is killed (of 6)
# the search worker commits the shards, so the crash is a worker subclass: defined in __main__, Ray ships it to
# the worker process by value; one worker (the config's), so no other commit can land in between
CRASHING_DRIVER = f"""
import os, signal, sys
from pipelines import search_worker
from pipelines.cli import app

DRIVER_GROUP = os.getpgrp()

class CrashingWorker(search_worker.SearchWorker):
    def _one_less(self, shard):
        super()._one_less(shard)
        self.commits = getattr(self, "commits", 0) + (shard.left == 0)
        if self.commits == {CRASH_AFTER_COMMITS}:
            os.killpg(DRIVER_GROUP, signal.SIGKILL)  # the driver and the local Ray it started, mid-run

search_worker.SearchWorker = CrashingWorker
sys.argv[0] = "tracemill"
app()
"""


def _cli(*args: str, crash: bool = False) -> subprocess.Popen:
    # a session of its own: the driver and the local Ray it starts can be killed as one group
    driver = ["-c", CRASHING_DRIVER] if crash else ["-m", "pipelines.cli"]
    return subprocess.Popen([sys.executable, *driver, "run", "--no-progress", "--no-report", *args],
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})


def _finish(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]


def _committed(root: Path, run_id: str) -> int:
    try:
        return len(json.loads((root / "runs" / run_id / "manifest.json").read_text())["shards"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def _counts(root: Path, run_id: str) -> dict[str, int]:
    with Catalog(root) as cat:
        return {t: cat.sql(f"SELECT count(*) AS c FROM {t}", run_id=run_id).column("c")[0].as_py() for t in TABLES}


def test_sigkilled_driver_resumes_to_the_same_rows_exactly_once(tmp_path):
    root = tmp_path / "data"
    config = tmp_path / "resume.toml"
    config.write_text(CONFIG.format(root=root))
    _finish(_cli("-c", str(config), "--run-id", "reference"))

    victim = _cli("-c", str(config), "--run-id", "victim", crash=True)
    out, _ = victim.communicate(timeout=300)
    assert victim.returncode == -signal.SIGKILL, out[-3000:]
    assert _committed(root, "victim") == CRASH_AFTER_COMMITS

    _finish(_cli("-c", str(config), "--resume", "victim"))
    assert _committed(root, "victim") == 7  # 6 problem shards + the mined traces
    assert _counts(root, "victim") == _counts(root, "reference")
    with Catalog(root) as cat:
        once = cat.sql("SELECT count(*) AS n, count(DISTINCT problem_id) AS d FROM problems", run_id="victim")
        assert once.to_pylist() == [{"n": 24, "d": 24}]
        dup = cat.sql("SELECT count(*) AS c FROM (SELECT request_key, rollout_index FROM rollouts "
                      "GROUP BY 1, 2 HAVING count(*) > 1)", run_id="victim")
        assert dup.column("c")[0].as_py() == 0
        status = cat.sql("SELECT status FROM runs", run_id="victim").column("status")[0].as_py()
    assert status == "finished"
