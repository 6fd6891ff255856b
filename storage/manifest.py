"""The run manifest: the one list of committed shards, and so the one thing readers trust.

A shard is committed exactly when its entry is in ``runs/<run_id>/manifest.json``. The manifest is replaced
atomically (temp file + ``os.replace``) after the shard's files are in place, so a reader that takes its file
list from the manifest sees every file of a shard or none of them, and never a file still being written.
Files on disk that the manifest does not list (a crash between the renames and the manifest update) are
ignored by readers and deleted by the next writer of that run.

A manifest that cannot be read (corrupt or truncated JSON, wrong types, a file path outside its run folder)
raises ``ManifestError`` naming it: readers of the whole root skip that one run with a warning, and writers
refuse to touch the run rather than take the damage for an empty manifest and overwrite it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from storage.layout import RunPaths, run_ids, stage_json, write_json_atomic
from storage.schemas import TABLES

MANIFEST_VERSION = 1


class ManifestError(ValueError):
    """A run's manifest cannot be read; the message names the file and what is wrong with it."""


@dataclass
class Manifest:
    """Committed shards of one run: ``shards[name] = {"committed_at": iso, "files": {table: {path, rows}}}``.

    Paths are relative to the run folder, so a data root can be moved or copied as a whole.
    """

    run_id: str
    shards: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def load(cls, paths: RunPaths) -> Manifest:
        """The run's manifest (empty if the run has none yet); ``ManifestError`` if it cannot be read."""
        if not paths.manifest.exists():
            return cls(paths.run_id)
        try:
            doc = json.loads(paths.manifest.read_bytes())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
            raise ManifestError(f"{paths.manifest}: unreadable manifest: {err}") from None
        problem = _problem(doc, paths.run_id)
        if problem:
            raise ManifestError(f"{paths.manifest}: unreadable manifest: {problem}")
        return cls(doc["run_id"], doc["shards"])

    def _document(self) -> dict:
        return {"version": MANIFEST_VERSION, "run_id": self.run_id, "shards": self.shards}

    def save(self, paths: RunPaths) -> None:
        write_json_atomic(self._document(), paths.manifest)

    def stage(self, paths: RunPaths) -> Path:
        """Write the new manifest beside the current one without installing it (``replace_synced`` does):
        the one step of a commit that needs disk space, done before any file readers see is touched."""
        return stage_json(self._document(), paths.manifest)

    def add(self, shard_name: str, rows: dict[str, int], paths: RunPaths) -> None:
        """Record a shard whose files (one per table in ``rows``) are already in place."""
        files = {
            table: {"path": str(paths.shard_file(table, shard_name).relative_to(paths.run_dir)), "rows": n}
            for table, n in rows.items()
        }
        self.shards[shard_name] = {"committed_at": datetime.now(timezone.utc).isoformat(), "files": files}

    def relative_files(self) -> set[str]:
        return {f["path"] for shard in self.shards.values() for f in shard["files"].values()}

    def files(self, paths: RunPaths) -> dict[str, list[Path]]:
        """Absolute paths of committed files, per table, in commit order."""
        out: dict[str, list[Path]] = {}
        for shard in self.shards.values():
            for table, f in shard["files"].items():
                out.setdefault(table, []).append(paths.run_dir / f["path"])
        return out

    def rows(self) -> dict[str, int]:
        """Committed row counts per table (from the manifest: no Parquet file is opened)."""
        out: dict[str, int] = {}
        for shard in self.shards.values():
            for table, f in shard["files"].items():
                out[table] = out.get(table, 0) + f["rows"]
        return out


def _problem(doc: object, run_id: str) -> str | None:
    """What makes ``doc`` not a manifest of ``run_id`` (None if it is one)."""
    if not isinstance(doc, dict):
        return f"a JSON {type(doc).__name__}, not an object"
    if doc.get("version") != MANIFEST_VERSION:
        return f"version {doc.get('version')!r}, expected {MANIFEST_VERSION}"
    if doc.get("run_id") != run_id:
        return f"run_id {doc.get('run_id')!r}, expected {run_id!r}"
    shards = doc.get("shards")
    if not isinstance(shards, dict):
        return "shards is not an object"
    for name, entry in shards.items():
        files = entry.get("files") if isinstance(entry, dict) else None
        if not isinstance(files, dict):
            return f"shard {name!r} has no files object"
        for table, f in files.items():
            if table not in TABLES or not isinstance(f, dict):
                return f"shard {name!r}: bad entry for table {table!r}"
            # the one path a commit writes: a manifest cannot point a reader outside its run's table folders
            if f.get("path") != f"{table}/{name}.parquet":
                return f"shard {name!r}: path {f.get('path')!r} is not {table}/{name}.parquet"
            rows = f.get("rows")
            if type(rows) is not int or rows < 0:
                return f"shard {name!r}: rows of {table!r} is {rows!r}, not a count"
    return None


def committed_shards(root: Path | str, run_id: str) -> set[str]:
    """Names of the shards of ``run_id`` already committed: the work a resumed run can skip."""
    return set(Manifest.load(RunPaths(Path(root), run_id)).shards)


def committed_files(root: Path | str, run_id: str | None = None) -> dict[str, list[Path]]:
    """Absolute paths of every committed file per table, over one run or all runs under ``root``.

    The ``runs`` table's file (``runs/<run_id>/runs/run.parquet``) is included where it exists: it is not a
    shard but is only ever replaced atomically, so it is always complete.
    """
    out: dict[str, list[Path]] = {}
    for rid in [run_id] if run_id is not None else run_ids(root):
        paths = RunPaths(Path(root), rid)
        for table, files in run_files(paths, Manifest.load(paths)).items():
            out.setdefault(table, []).extend(files)
    return out


def run_files(paths: RunPaths, manifest: Manifest) -> dict[str, list[Path]]:
    """Committed files of one run per table, plus its ``runs`` row file where it exists."""
    files = manifest.files(paths)
    if paths.run_file.exists():
        files.setdefault("runs", []).append(paths.run_file)
    return files
