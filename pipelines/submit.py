"""Submit a run to a Ray cluster as a Ray Job, and follow it: ``submit``, ``status``, ``logs``.

The job's ``submission_id`` IS the run id, so a run cannot be submitted twice by accident: a second submit
of the same id is refused with a message naming the existing job. The working directory is shipped as the
job's ``runtime_env.working_dir`` (without the virtualenv, run data and git history); the config must live
inside it, because the job reads it from there.

The job runs the CLI with the interpreter tracemill is installed in (``python``: by default this process's
``sys.executable``, so a head node with the same install path, or the same image, finds it), never with
whatever ``python`` the head's ``PATH`` has: a bare interpreter there lacks the dependencies (``No module
named typer``). On a cluster laid out differently, pass the head's interpreter (``--python``); the shipped
working dir comes first on its ``sys.path``, so the job runs the submitted code.

Token auth (``RAY_AUTH_MODE=token`` on the cluster): pass ``token`` (``--token``, or ``RAY_AUTH_TOKEN`` in
the environment) and it is sent as a bearer ``Authorization`` header; without it Ray's client sends the token
it finds itself when this process runs with ``RAY_AUTH_MODE=token`` (``RAY_AUTH_TOKEN_PATH``, default
``~/.ray/auth_token``).

Example:
    >>> submit("http://head:8265", "configs/gsm8k.toml", "gsm8k-001", ".")  # doctest: +SKIP
    'gsm8k-001'
    >>> status("http://head:8265", "gsm8k-001")  # doctest: +SKIP
    'RUNNING'
    >>> for chunk in logs("http://head:8265", "gsm8k-001", follow=True): print(chunk, end="")  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

from ray.job_submission import JobSubmissionClient

WORKING_DIR_EXCLUDES = [".venv", ".git", "runs", "tracemill_data", "__pycache__", "*.pyc", ".pytest_cache"]
ENTRYPOINT = "{python} -m pipelines.cli run --config {config} --run-id {run_id}"


class AlreadySubmitted(RuntimeError):
    """A job with this run id exists on the cluster already."""


def client(address: str, token: str | None = None) -> JobSubmissionClient:
    """A Jobs client for the dashboard at ``address`` (``http://host:8265``), with a bearer token if given."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return JobSubmissionClient(address, headers=headers)


def entrypoint(config: str, run_id: str, python: str | None = None) -> str:
    """The job's command line: the pipeline CLI on the shipped config, run by tracemill's interpreter."""
    return ENTRYPOINT.format(python=shlex.quote(python or sys.executable), config=shlex.quote(config),
                             run_id=shlex.quote(run_id))


def config_in_working_dir(config_path: str | Path, working_dir: str | Path) -> str:
    """The config's path relative to ``working_dir`` (where the job will find it), or a clear error."""
    config, root = Path(config_path).resolve(), Path(working_dir).resolve()
    if not config.is_file():
        raise FileNotFoundError(f"config not found: {config_path}")
    if not config.is_relative_to(root):
        raise ValueError(f"config {config} is outside the working dir {root}; only the working dir is shipped")
    return config.relative_to(root).as_posix()


def submit_entrypoint(address: str, run_id: str, command: str, working_dir: str | Path,
                      token: str | None = None) -> str:
    """Submit ``command`` as job ``run_id`` with ``working_dir`` shipped; refuse an id already in use."""
    jobs = client(address, token)
    existing = _job_status(jobs, run_id)
    if existing is not None:
        raise AlreadySubmitted(f"run {run_id!r} was already submitted to {address} (status {existing}); "
                               "choose a new run id, or follow it with `logs`")
    runtime_env = {"working_dir": str(Path(working_dir).resolve()), "excludes": WORKING_DIR_EXCLUDES}
    try:
        return jobs.submit_job(entrypoint=command, submission_id=run_id, runtime_env=runtime_env)
    except RuntimeError as err:  # a submit racing ours took the id between the check and here
        if "already exists" in str(err):
            raise AlreadySubmitted(f"run {run_id!r} was already submitted to {address}") from err
        raise


def submit(address: str, config_path: str | Path, run_id: str, working_dir: str | Path = ".",
           token: str | None = None, python: str | None = None) -> str:
    """Submit the run ``run_id`` of the config at ``config_path``; returns the submission id (= run id).

    ``python``: the interpreter on the head node that has tracemill's dependencies (default: this one).
    """
    config = config_in_working_dir(config_path, working_dir)
    return submit_entrypoint(address, run_id, entrypoint(config, run_id, python), working_dir, token)


def status(address: str, run_id: str, token: str | None = None) -> str:
    """The job's status (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED); ``KeyError`` if there is none."""
    found = _job_status(client(address, token), run_id)
    if found is None:
        raise KeyError(f"no job {run_id!r} on {address}")
    return found


def logs(address: str, run_id: str, follow: bool = False, token: str | None = None) -> Iterator[str]:
    """The job's log: all of it so far, or with ``follow`` every chunk as it comes until the job ends."""
    jobs = client(address, token)
    if not follow:
        yield jobs.get_job_logs(run_id)
        return
    loop = asyncio.new_event_loop()
    tail = jobs.tail_job_logs(run_id)
    try:
        while True:
            try:
                yield loop.run_until_complete(anext(tail))
            except StopAsyncIteration:
                return
    finally:
        loop.run_until_complete(tail.aclose())
        loop.close()


def _job_status(jobs: JobSubmissionClient, run_id: str) -> str | None:
    try:
        return str(jobs.get_job_status(run_id).value)
    except RuntimeError as err:  # the Jobs API answers 404 as RuntimeError("... does not exist")
        if "does not exist" in str(err):
            return None
        raise
