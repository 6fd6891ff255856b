"""The run manifest: the one list of committed shards, and so the one thing readers trust.

A shard is committed exactly when its entry is in ``runs/<run_id>/manifest.json``. The manifest is replaced
atomically (temp file + ``os.replace``) after the shard's files are in place, so a reader that takes its file
list from the manifest sees every file of a shard or none of them, and never a file still being written.
Files on disk that the manifest does not list (a crash between the renames and the manifest update) are
ignored by readers and deleted by the next writer of that run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from storage.layout import RunPaths, run_ids, write_json_atomic

MANIFEST_VERSION = 1


@dataclass
class Manifest:
    """Committed shards of one run: ``shards[name] = {"committed_at": iso, "files": {table: {path, rows}}}``.

    Paths are relative to the run folder, so a data root can be moved or copied as a whole.
    """

    run_id: str
    shards: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def load(cls, paths: RunPaths) -> Manifest:
        if not paths.manifest.exists():
            return cls(paths.run_id)
        doc = json.loads(paths.manifest.read_text())
        if doc.get("version") != MANIFEST_VERSION:
            raise ValueError(f"{paths.manifest}: manifest version {doc.get('version')}, expected {MANIFEST_VERSION}")
        return cls(doc["run_id"], doc["shards"])

    def save(self, paths: RunPaths) -> None:
        doc = {"version": MANIFEST_VERSION, "run_id": self.run_id, "shards": self.shards}
        write_json_atomic(doc, paths.manifest)

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
