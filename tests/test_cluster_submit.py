"""Job submission against a real Ray head started by this test (token auth on), then stopped by pid.

The head runs ``ray start --block`` in a session of its own with a private temp dir, so stopping it kills
exactly the processes it started (``ray stop`` would kill every Ray on the machine). Its ``PATH`` starts
with a bare ``python`` (the base interpreter, without this virtualenv's packages), as on a cluster whose
``python`` is not the one tracemill is installed in: a job that ran ``python -m pipelines.cli`` died there
with ``No module named typer``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines import submit as jobs

pytestmark = pytest.mark.slow
TOKEN = "tracemill-test-token-0123456789abcdef0123"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BARE_PYTHON = sys._base_executable  # this virtualenv's base interpreter: no typer, no ray


@dataclass(frozen=True)
class Head:
    address: str  # the dashboard (Jobs API)
    gcs: str  # what `tracemill run --address` joins


@pytest.fixture(scope="module")
def head():
    temp = tempfile.mkdtemp(prefix="rayt", dir="/tmp")  # short: Ray's unix socket paths are length-limited
    bare = Path(temp) / "bin"
    bare.mkdir()
    (bare / "python").symlink_to(BARE_PYTHON)
    dash, gcs = _free_port(), _free_port()
    # the `ray` CLI of this interpreter (a virtualenv sharing its packages through a .pth has no `ray` script)
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--num-cpus=1",
           f"--temp-dir={temp}", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", f"--port={gcs}",
           f"--dashboard-port={dash}", f"--ray-client-server-port={_free_port()}",
           f"--dashboard-agent-listen-port={_free_port()}"]
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN,
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # keep --node-ip-address=127.0.0.1 (README: cluster section)
           "PATH": f"{bare}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 120
        while True:  # up once the head's job agent takes a job (the Jobs API answers before it does)
            try:
                jobs.client(address, TOKEN).submit_job(entrypoint="true", submission_id="agent-ready")
                break
            except Exception as err:
                if "already exists" in str(err):
                    break
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.5)
        yield Head(address, f"127.0.0.1:{gcs}")
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


def test_entrypoint_runs_the_cli_on_the_shipped_config_with_tracemills_interpreter(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "a b.toml").write_text("")
    rel = jobs.config_in_working_dir(tmp_path / "configs" / "a b.toml", tmp_path)
    assert jobs.entrypoint(rel, "r1") == (f"{shlex.quote(sys.executable)} -m pipelines.cli run "
                                          "--config 'configs/a b.toml' --run-id r1")
    assert jobs.entrypoint(rel, "r1", python="/opt/py 3/bin/python").startswith("'/opt/py 3/bin/python' -m ")
    outside = tmp_path.parent / "elsewhere.toml"
    outside.write_text("")
    with pytest.raises(ValueError, match="outside the working dir"):
        jobs.config_in_working_dir(outside, tmp_path)


def test_submit_runs_once_per_run_id_and_logs_come_back(head, tmp_path):
    (tmp_path / "hello.py").write_text("print('hello from', __import__('os').getcwd().count('/') > 0)\n")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "big.bin").write_bytes(b"x" * 1024)
    cmd = "python hello.py && test ! -e .venv"  # the working dir is shipped, the virtualenv is not
    assert jobs.submit_entrypoint(head.address, "run-1", cmd, tmp_path, TOKEN) == "run-1"
    assert _wait_done(head.address, "run-1") == "SUCCEEDED"
    assert "hello from True" in "".join(jobs.logs(head.address, "run-1", token=TOKEN))
    assert "hello from True" in "".join(jobs.logs(head.address, "run-1", follow=True, token=TOKEN))
    with pytest.raises(jobs.AlreadySubmitted, match="run-1.*already submitted"):
        jobs.submit_entrypoint(head.address, "run-1", cmd, tmp_path, TOKEN)
    with pytest.raises(KeyError):
        jobs.status(head.address, "never-submitted", TOKEN)


def test_a_cluster_with_token_auth_refuses_a_client_without_the_token(head):
    with pytest.raises(Exception, match="(?i)unauthori|token|401"):
        jobs.status(head.address, "run-1")


REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("cluster", "search", "verifier", "pipelines", "storage")
NO_TOKEN_ENV = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE", "RAY_ADDRESS")}


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env={**NO_TOKEN_ENV, "TRACEMILL_NO_PROGRESS": "1", **(env or {})}, timeout=300)


def _checkout(tmp_path: Path, body: str) -> tuple[Path, Path]:
    """A user's checkout (only the code, as it would be shipped) with ``configs/job.toml``; and a data root."""
    work, data = tmp_path / "work", tmp_path / "data"
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, work / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (work / "configs").mkdir()
    (work / "configs" / "job.toml").write_text(
        f'name = "job"\n[problems]\nn = 6\n[engine]\nbackend = "sim"\nnum_cpus = 0.5\n{body}'
        f'[storage]\nroot = "{data}"\n')
    return work, data


def test_a_sim_run_submitted_with_the_token_on_the_command_line_completes_and_writes_its_tables(head, tmp_path):
    from storage.catalog import Catalog

    # what the cluster's own `python` does with the CLI: the failure the submitted job used to hit
    assert jobs.submit_entrypoint(head.address, "bare-1", "python -m pipelines.cli --help", tmp_path, TOKEN)
    assert _wait_done(head.address, "bare-1") == "FAILED"
    assert "No module named" in "".join(jobs.logs(head.address, "bare-1", token=TOKEN))

    work, data = _checkout(tmp_path, "")
    out = _cli("submit", "--address", head.address, "--token", TOKEN, "--run-id", "sim-job-1",
               "--working-dir", str(work), str(work / "configs" / "job.toml"))
    assert out.returncode == 0 and "submitted sim-job-1" in out.stdout, out.stdout + out.stderr
    state = _wait_done(head.address, "sim-job-1", timeout_s=120)
    log = "".join(jobs.logs(head.address, "sim-job-1", token=TOKEN))
    assert state == "SUCCEEDED", log[-2000:]
    with Catalog(data) as cat:
        counts = cat.sql("SELECT (SELECT count(*) FROM problems) AS p, (SELECT status FROM runs) AS s, "
                         "(SELECT count(*) > 0 FROM step_labels) AS labeled", run_id="sim-job-1").to_pylist()[0]
    assert counts == {"p": 6, "s": "finished", "labeled": True}
    status = _cli("status", "sim-job-1", "--address", head.address, env={"RAY_AUTH_TOKEN": TOKEN})
    assert status.returncode == 0 and status.stdout.strip() == "SUCCEEDED", status.stdout + status.stderr
    with pytest.raises(jobs.AlreadySubmitted):
        jobs.submit(head.address, str(work / "configs" / "job.toml"), "sim-job-1", str(work), TOKEN)


def test_a_run_joining_a_cluster_without_a_gpu_fails_after_the_placement_timeout(head, tmp_path):
    work, data = _checkout(tmp_path, "num_gpus = 1\n[ray]\nplacement_timeout_s = 3\n")
    out = _cli("run", "-c", str(work / "configs" / "job.toml"), "--address", head.gcs, "--run-id", "gpu-job",
               "--no-report", env={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN})
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert out.returncode == 2, out.stdout + out.stderr
    assert lines[-1].startswith("error: config error: 1 of 1 placements (engine actor: CPU 0.5, GPU 1 each) "
                                "not placed within 3 s (ray.placement_timeout_s)"), lines
    assert not any("Traceback" in line for line in lines), lines
    from storage.runs import read_run

    assert read_run(data, "gpu-job").status == "failed"
