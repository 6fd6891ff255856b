"""Job submission against a real Ray head started by this test (token auth on), then stopped by pid.

The head runs ``ray start --block`` in a session of its own with a private temp dir, so stopping it kills
exactly the processes it started (``ray stop`` would kill every Ray on the machine).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pipelines import submit as jobs

pytestmark = pytest.mark.slow
TOKEN = "tracemill-test-token-0123456789abcdef0123"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head():
    temp = tempfile.mkdtemp(prefix="rayt", dir="/tmp")  # short: Ray's unix socket paths are length-limited
    dash = _free_port()
    ray_bin = Path(sys.executable).with_name("ray")
    cmd = [str(ray_bin), "start", "--head", "--block", "--num-cpus=1", f"--temp-dir={temp}",
           "--dashboard-host=127.0.0.1", f"--port={_free_port()}", f"--dashboard-port={dash}",
           f"--ray-client-server-port={_free_port()}", f"--dashboard-agent-listen-port={_free_port()}"]
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN,
           # jobs run `python ...`: make it this interpreter, as a cluster's nodes would have tracemill installed
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                jobs.client(address, TOKEN).list_jobs()
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.5)
        yield address
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(1)
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the same session
        except ProcessLookupError:
            pass
        shutil.rmtree(temp, ignore_errors=True)


def _wait_done(address: str, run_id: str, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while (state := jobs.status(address, run_id, TOKEN)) not in {"SUCCEEDED", "FAILED", "STOPPED"}:
        assert time.monotonic() < deadline, f"job still {state}"
        time.sleep(0.5)
    return state


def test_entrypoint_runs_the_cli_on_the_shipped_config(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "a b.toml").write_text("")
    rel = jobs.config_in_working_dir(tmp_path / "configs" / "a b.toml", tmp_path)
    assert jobs.entrypoint(rel, "r1") == "python -m pipelines.cli run --config 'configs/a b.toml' --run-id r1"
    outside = tmp_path.parent / "elsewhere.toml"
    outside.write_text("")
    with pytest.raises(ValueError, match="outside the working dir"):
        jobs.config_in_working_dir(outside, tmp_path)


def test_submit_runs_once_per_run_id_and_logs_come_back(head, tmp_path):
    (tmp_path / "hello.py").write_text("print('hello from', __import__('os').getcwd().count('/') > 0)\n")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "big.bin").write_bytes(b"x" * 1024)
    cmd = "python hello.py && test ! -e .venv"  # the working dir is shipped, the virtualenv is not
    assert jobs.submit_entrypoint(head, "run-1", cmd, tmp_path, TOKEN) == "run-1"
    assert _wait_done(head, "run-1") == "SUCCEEDED"
    assert "hello from True" in "".join(jobs.logs(head, "run-1", token=TOKEN))
    assert "hello from True" in "".join(jobs.logs(head, "run-1", follow=True, token=TOKEN))
    with pytest.raises(jobs.AlreadySubmitted, match="run-1.*already submitted"):
        jobs.submit_entrypoint(head, "run-1", cmd, tmp_path, TOKEN)
    with pytest.raises(KeyError):
        jobs.status(head, "never-submitted", TOKEN)


def test_a_cluster_with_token_auth_refuses_a_client_without_the_token(head):
    with pytest.raises(Exception, match="(?i)unauthori|token|401"):
        jobs.status(head, "run-1")


REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("cluster", "search", "verifier", "pipelines", "storage")


def test_a_sim_run_submitted_as_a_job_completes_and_writes_its_tables(head, tmp_path):
    from storage.catalog import Catalog

    work, data = tmp_path / "work", tmp_path / "data"
    for pkg in PACKAGES:  # ship only the code, as a user's checkout would be shipped
        shutil.copytree(REPO / pkg, work / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (work / "configs").mkdir()
    (work / "configs" / "job.toml").write_text(
        f'name = "job"\n[problems]\nn = 6\n[engine]\nbackend = "sim"\nnum_cpus = 0.5\n'
        f'[storage]\nroot = "{data}"\n')
    assert jobs.submit(head, str(work / "configs" / "job.toml"), "sim-job-1", str(work), TOKEN) == "sim-job-1"
    state = _wait_done(head, "sim-job-1", timeout_s=120)
    log = "".join(jobs.logs(head, "sim-job-1", token=TOKEN))
    assert state == "SUCCEEDED", log[-2000:]
    with Catalog(data) as cat:
        counts = cat.sql("SELECT (SELECT count(*) FROM problems) AS p, (SELECT status FROM runs) AS s",
                         run_id="sim-job-1").to_pylist()[0]
    assert counts == {"p": 6, "s": "finished"}
    with pytest.raises(jobs.AlreadySubmitted):
        jobs.submit(head, str(work / "configs" / "job.toml"), "sim-job-1", str(work), TOKEN)
