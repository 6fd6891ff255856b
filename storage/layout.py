"""Where every file of a data root lives, and the atomic file primitives all writers share.

```
root/
  catalog.duckdb                      views over committed files (for notebooks and the duckdb CLI)
  staging/<run_id>/<writer>/...       in-progress files; same filesystem, so a rename into runs/ is atomic
  runs/<run_id>/manifest.json         committed shards -> their files and row counts
  runs/<run_id>/.lock                 flock serialising manifest updates of one run
  runs/<run_id>/.reserve              space held while the run is running, freed to record how it ended
  runs/<run_id>/<table>/<shard>.parquet
  runs/<run_id>/runs/run.parquet      the run's one ``runs`` row, replaced atomically on each status change
```
Staging lives outside ``runs/`` so that a reader globbing ``runs/*/<table>/*.parquet`` never meets a half
written file. Names are restricted to a safe alphabet because they become path components.

A full disk. Every write goes to a temporary name first and a failed write deletes what it had written, so
ENOSPC (or EDQUOT, EFBIG: ``DISK_FULL``) leaves the previous version of every file in place and no partial
file behind. Renames need no free space, so the steps that can run out of it all come before anything
readers see changes.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DEFAULT_ROOT = Path("tracemill_data")
MANIFEST = "manifest.json"
RUN_FILE = "run.parquet"  # the runs table's single file inside runs/<run_id>/runs/
PARQUET_COMPRESSION = "zstd"  # vs snappy: 1.7x smaller step_labels, 3.7x smaller step text, similar speed
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=-]{0,199}")
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})  # no space, quota exceeded, file too large


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` is a write that failed for want of space (the fix is freeing some, then resuming)."""
    return isinstance(err, OSError) and err.errno in DISK_FULL


def check_name(kind: str, name: str) -> str:
    """Return ``name`` if it is safe as a single path component, else raise ``ValueError``."""
    if not _SAFE_NAME.fullmatch(name):
        raise ValueError(f"invalid {kind} {name!r}: use letters, digits and . _ = - (not leading), at most 200")
    return name


@dataclass(frozen=True)
class RunPaths:
    """The paths of one run under a data root (absolute, so in-memory DuckDB views work from any directory)."""

    root: Path
    run_id: str

    def __post_init__(self) -> None:
        check_name("run_id", self.run_id)
        object.__setattr__(self, "root", Path(self.root).absolute())

    @property
    def run_dir(self) -> Path:
        return self.root / "runs" / self.run_id

    @property
    def manifest(self) -> Path:
        return self.run_dir / MANIFEST

    @property
    def lock(self) -> Path:
        return self.run_dir / ".lock"

    @property
    def reserve(self) -> Path:
        return self.run_dir / ".reserve"

    @property
    def staging(self) -> Path:
        return self.root / "staging" / self.run_id

    @property
    def run_file(self) -> Path:
        return self.table_dir("runs") / RUN_FILE

    def new_staging_dir(self) -> Path:
        """A staging folder private to one writer, named ``<pid>-<random>`` so dead writers' leftovers are found."""
        return self.staging / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def table_dir(self, table: str) -> Path:
        return self.run_dir / table

    def shard_file(self, table: str, shard_name: str) -> Path:
        return self.table_dir(table) / f"{shard_name}.parquet"


def run_ids(root: Path | str) -> list[str]:
    """Ids of all runs under ``root`` that have a folder, sorted (folders with names no run can have are skipped)."""
    runs = Path(root).absolute() / "runs"
    if not runs.is_dir():
        return []
    return sorted(p.name for p in runs.iterdir() if p.is_dir() and _SAFE_NAME.fullmatch(p.name))


def fsync_dir(path: Path) -> None:
    """Persist a directory entry (a rename or a new file) so it survives a power loss, not just a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def removed_on_error(path: Path) -> Iterator[Path]:
    """Delete ``path`` if the block raises: a write that failed (say on a full disk) leaves no partial file."""
    try:
        yield path
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def write_parquet_synced(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` and fsync it; the caller renames it into place afterwards."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with removed_on_error(path), open(path, "wb") as f:
        pq.write_table(table, f, compression=PARQUET_COMPRESSION)
        f.flush()
        os.fsync(f.fileno())


def replace_synced(src: Path, dest: Path) -> None:
    """Atomically move ``src`` over ``dest`` (same filesystem) and persist the rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dest)
    fsync_dir(dest.parent)


def stage_json(obj: object, path: Path) -> Path:
    """Write ``obj`` as JSON to a temporary file beside ``path`` and fsync it; ``replace_synced`` installs it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with removed_on_error(tmp), open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def write_json_atomic(obj: object, path: Path) -> None:
    """Replace ``path`` with ``obj`` as JSON: readers see the old or the new document, never a partial one."""
    replace_synced(stage_json(obj, path), path)


def write_reserve(path: Path, size: int) -> None:
    """Hold ``size`` bytes of the disk in ``path`` (random bytes: a compressing filesystem cannot shrink them)."""
    with removed_on_error(path), open(path, "wb") as f:
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed); serialises writers of one run.

    ``flock`` locks belong to the open file, so two writers in one process exclude each other too.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
