"""The ``runs`` table: one row per run, updated as the run goes running -> finished | failed.

Parquet files are immutable, so a run's row lives alone in ``runs/<run_id>/runs/run.parquet`` and each status
change rewrites that one small file: staged, fsynced, then ``os.replace``d over the old one under the run
lock. Readers therefore see the previous row or the new one, never both and never a partial file; the
catalog's ``runs`` view reads these files directly (they are not shards and not in the manifest).

A run that fills the disk must still be able to say so. ``start_run`` therefore holds ``RESERVE_BYTES`` of
the disk in ``runs/<run_id>/.reserve``, and ``finish_run`` deletes it just before writing the final row, so
the "failed" row of a run stopped by ENOSPC finds the space it needs (``start_run`` of the resume takes a
new reserve, and fails before anything is written while the disk is still full).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq

from storage.layout import RunPaths, locked, replace_synced, write_parquet_synced, write_reserve
from storage.tables import conform

RUN_STATUSES = ("running", "finished", "failed")
RESERVE_BYTES = 256 * 1024  # 25x the largest run row seen (about 10 KB with its stats)


@dataclass(frozen=True)
class RunRecord:
    """One row of the ``runs`` table (field names and order as in ``schemas.RUNS``)."""

    run_id: str
    config_json: str
    config_hash: str
    code_version: str | None
    model: str | None
    engine: str | None
    started_at: datetime
    finished_at: datetime | None
    status: str
    stats_json: str | None

    def __post_init__(self) -> None:
        if self.status not in RUN_STATUSES:
            raise ValueError(f"run status {self.status!r} not in {RUN_STATUSES}")


def config_hash(config: Mapping) -> str:
    """Stable 16-hex-digit hash of a config: key order and whitespace do not change it."""
    return hashlib.sha256(_canonical(config).encode()).hexdigest()[:16]


def start_run(
    root: Path | str,
    run_id: str,
    config: Mapping,
    *,
    model: str | None = None,
    engine: str | None = None,
    code_version: str | None = None,
) -> RunRecord:
    """Mark ``run_id`` running. Resuming keeps the first start time; a different config is an error, since
    a resume skips committed shards and would silently mix outputs of two configs."""
    previous = read_run(root, run_id)
    digest = config_hash(config)
    if previous is not None and previous.config_hash != digest:
        raise ValueError(f"run {run_id!r} was started with config {previous.config_hash}, now {digest}")
    record = RunRecord(
        run_id=run_id,
        config_json=_canonical(config),
        config_hash=digest,
        code_version=code_version,
        model=model,
        engine=engine,
        started_at=previous.started_at if previous else _now(),
        finished_at=None,
        status="running",
        stats_json=None,
    )
    paths = RunPaths(Path(root), run_id)
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    write_reserve(paths.reserve, RESERVE_BYTES)
    write_run(root, record)
    return record


def finish_run(root: Path | str, run_id: str, stats: Mapping | None = None, *, failed: bool = False) -> RunRecord:
    """Mark a started run finished (or failed), with its summary counters (problems, rollouts, tokens, ...)."""
    previous = read_run(root, run_id)
    if previous is None:
        raise ValueError(f"run {run_id!r} was never started under {root}")
    record = replace(
        previous,
        status="failed" if failed else "finished",
        finished_at=_now(),
        stats_json=_canonical(stats) if stats is not None else None,
    )
    RunPaths(Path(root), run_id).reserve.unlink(missing_ok=True)  # the space this last write may need
    write_run(root, record)
    return record


def fail_run(root: Path | str, run_id: str, error: str, stats: Mapping | None = None) -> RunRecord:
    """Mark a run failed; ``error`` is kept in ``stats_json`` under ``"error"``."""
    return finish_run(root, run_id, {**(stats or {}), "error": error}, failed=True)


class UnknownRunError(LookupError):
    """No run of that id under the data root (a typo, or the wrong ``--root``)."""


def require_run(root: Path | str, run_id: str) -> RunRecord:
    """The run's record; ``UnknownRunError`` (one line) if ``run_id`` was never started under ``root``.

    Commands that read a run (export, mine, report, eval, validate) call this first, so a mistyped id writes
    nothing instead of creating a phantom run.
    """
    try:
        record = read_run(root, run_id)
    except ValueError as err:  # not a name any run can have
        raise UnknownRunError(str(err)) from None
    if record is None:
        raise UnknownRunError(f"no run {run_id!r} under {Path(root)}")
    return record


def read_run(root: Path | str, run_id: str) -> RunRecord | None:
    path = RunPaths(Path(root), run_id).run_file
    if not path.exists():
        return None
    (row,) = pq.read_table(path).to_pylist()
    return RunRecord(**row)


def write_run(root: Path | str, record: RunRecord) -> None:
    """Replace the run's row atomically (see the module docstring)."""
    paths = RunPaths(Path(root), record.run_id)
    table = conform("runs", [asdict(record)], record.run_id)
    staging = paths.new_staging_dir()
    try:
        write_parquet_synced(table, staging / "run.parquet")
        with locked(paths.lock):
            replace_synced(staging / "run.parquet", paths.run_file)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _canonical(obj: Mapping) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def _now() -> datetime:
    return datetime.now(timezone.utc)
