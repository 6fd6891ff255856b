"""Exactly-once shard commits: stage, fsync, rename into place, then record in the manifest.

A *shard* is a named unit of output (e.g. ``problems-000042``: every table row produced for one batch of
problems). ``commit`` writes each of its tables to ``root/staging/``, renames the files to
``runs/<run_id>/<table>/<shard_name>.parquet`` and only then adds the shard to the manifest. Why this is
exactly-once and why readers never see partial output:

- a shard already in the manifest is skipped, so a resumed run re-submitting finished work writes nothing;
- a crash before the manifest update leaves the shard uncommitted; committing it again renames onto the same
  deterministic file names, so the stray files are overwritten, never duplicated;
- a *derived* shard (traces, datasets: rebuilt from the run's stored rows) is ``replace``d instead: building
  it again swaps its files and manifest entry, so a rebuild never adds a second copy of anything;
- readers (``Catalog``, ``committed_files``) list files from the manifest, never by globbing, so stray files
  are invisible to them; a new ``ShardWriter`` also deletes them (under the run lock) so that external
  tools globbing ``runs/*/<table>/*.parquet`` see only committed data once a run is resumed or finished.

Manifest updates hold an ``flock`` on ``runs/<run_id>/.lock``, so several writers of one run on one host
(threads or processes) can commit concurrently; staging is per writer, so their files never collide.

A full disk (``layout.DISK_FULL``) fails a commit before anything readers see has changed: the shard's files
and the new manifest are all written (to staging and a temporary name) before the first rename, and renames
need no space. The failed commit's staged files are deleted and the error is raised; the shard is simply not
committed, and committing it again after space is freed does it exactly once.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from storage.layout import (
    RunPaths,
    check_name,
    locked,
    removed_on_error,
    replace_synced,
    write_parquet_synced,
)
from storage.manifest import Manifest, committed_shards
from storage.schemas import TABLES
from storage.tables import Rows, SchemaError, conform

__all__ = ["ShardWriter", "committed_shards", "holds"]


class ShardWriter:
    """Commits shards of one run under a data root.

    >>> with ShardWriter(root, "run-1") as w:  # doctest: +SKIP
    ...     w.commit("batch-0000", {"problems": [{"problem_id": "p1", "question": "1+1?"}]})
    True
    """

    def __init__(self, root: Path | str, run_id: str) -> None:
        self.paths = RunPaths(Path(root), run_id)
        self._staging = self.paths.new_staging_dir()
        with locked(self.paths.lock):
            self._sweep()

    @property
    def run_id(self) -> str:
        return self.paths.run_id

    def committed(self) -> set[str]:
        return committed_shards(self.paths.root, self.run_id)

    def commit(self, shard_name: str, tables: dict[str, Rows]) -> bool:
        """Write every table of the shard and commit it; ``False`` (nothing written) if already committed.

        Rows are cast to the tables' schemas first (``SchemaError`` before any file is touched). Tables with
        no rows get no file; a shard with no rows at all is still recorded, so a resume skips it.
        """
        if shard_name in self.committed():
            return False
        conformed = self._conform(shard_name, tables)
        staged = self._stage_all(shard_name, conformed)
        with _discarded_on_error(staged), locked(self.paths.lock):
            manifest = Manifest.load(self.paths)
            if shard_name in manifest.shards:  # another writer committed it while we were staging
                for path in staged.values():
                    path.unlink()
                return False
            self._install(manifest, shard_name, conformed, staged)
        return True

    def replace(self, shard_name: str, tables: dict[str, Rows]) -> bool:
        """Commit ``tables`` as shard ``shard_name``, replacing it if it exists; ``False`` if nothing changed.

        For derived shards (traces, datasets) that are a function of the run's stored rows: building one again
        replaces it, so it is never held twice. Each table file is renamed over the old one (readers see the
        old file or the new one), tables the new version lacks are removed, and the manifest entry is rewritten
        under the lock. A rebuild with identical rows touches nothing, so its files stay byte-identical.
        """
        conformed = self._conform(shard_name, tables)
        with locked(self.paths.lock):
            manifest = Manifest.load(self.paths)
            if shard_name in manifest.shards and _same(self.paths, manifest.shards[shard_name], conformed):
                return False
            staged = self._stage_all(shard_name, conformed)
            with _discarded_on_error(staged):
                self._install(manifest, shard_name, conformed, staged)
        return True

    def _conform(self, shard_name: str, tables: dict[str, Rows]) -> dict[str, pa.Table]:
        check_name("shard name", shard_name)
        if "runs" in tables:
            raise SchemaError("the runs table is not written in shards; use storage.runs (start_run, finish_run)")
        return {name: conform(name, rows, self.run_id) for name, rows in tables.items()}

    def _stage_all(self, shard_name: str, conformed: dict[str, pa.Table]) -> dict[str, Path]:
        staged: dict[str, Path] = {}
        with _discarded_on_error(staged):
            for name, t in conformed.items():
                if t.num_rows:
                    staged[name] = self._stage(name, shard_name, t)
        return staged

    def _install(self, manifest: Manifest, shard_name: str, conformed: dict[str, pa.Table],
                 staged: dict[str, Path]) -> None:
        """Rename staged files into place and record the shard (caller holds the lock).

        The new manifest is written first (the last step that needs disk space), then the renames, then the
        manifest's rename. Files of tables the shard does not have are removed once the manifest no longer
        lists them: strays of a crashed attempt, or tables an earlier version of a replaced shard had.
        """
        manifest.add(shard_name, {name: conformed[name].num_rows for name in staged}, self.paths)
        with removed_on_error(manifest.stage(self.paths)) as new_manifest:
            for name, path in staged.items():
                replace_synced(path, self.paths.shard_file(name, shard_name))
            replace_synced(new_manifest, self.paths.manifest)
        for name in TABLES.keys() - staged.keys():
            self.paths.shard_file(name, shard_name).unlink(missing_ok=True)

    def write_rows(self, table: str, shard_name: str, rows: Rows) -> bool:
        """Commit a shard holding one table only (e.g. a file of rejects); see ``commit``."""
        return self.commit(shard_name, {table: rows})

    def close(self) -> None:
        shutil.rmtree(self._staging, ignore_errors=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _stage(self, table: str, shard_name: str, data: pa.Table) -> Path:
        path = self._staging / table / f"{shard_name}.parquet"
        write_parquet_synced(data, path)
        return path

    def _sweep(self) -> None:
        """Delete files of uncommitted shards and staging folders of dead writers (caller holds the lock)."""
        keep = Manifest.load(self.paths).relative_files() | {str(self.paths.run_file.relative_to(self.paths.run_dir))}
        for name in TABLES:
            for path in self.paths.table_dir(name).glob("*.parquet"):
                if str(path.relative_to(self.paths.run_dir)) not in keep:
                    path.unlink()
        if self.paths.staging.is_dir():
            for writer_dir in self.paths.staging.iterdir():
                if not _pid_alive(int(writer_dir.name.split("-")[0])):
                    shutil.rmtree(writer_dir, ignore_errors=True)


def holds(root: Path | str, run_id: str, shard_name: str, tables: dict[str, Rows]) -> bool:
    """Whether ``run_id`` has shard ``shard_name`` committed with exactly ``tables``: read-only, no lock.

    A derived shard that is already up to date needs no writer, so a caller checks this first and can then
    work on a data root it may not write to (``replace`` checks again under the lock before writing).
    """
    paths = RunPaths(Path(root), run_id)
    entry = Manifest.load(paths).shards.get(shard_name)
    conformed = {name: conform(name, rows, run_id) for name, rows in tables.items()}
    return entry is not None and _same(paths, entry, conformed)


def _same(paths: RunPaths, entry: dict, tables: dict[str, pa.Table]) -> bool:
    """Whether a committed shard holds exactly ``tables`` (empty tables have no file)."""
    present = {name for name, t in tables.items() if t.num_rows}
    if set(entry["files"]) != present:
        return False
    return all(pq.read_table(paths.run_dir / entry["files"][name]["path"]).equals(tables[name]) for name in present)


@contextmanager
def _discarded_on_error(staged: dict[str, Path]) -> Iterator[None]:
    """Delete the staged files of a commit that failed (say on a full disk), so they hold no space."""
    try:
        yield
    except BaseException:
        for path in staged.values():
            path.unlink(missing_ok=True)
        raise


def _pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (staging folders are named ``<pid>-<random>``)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
