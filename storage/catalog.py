"""DuckDB views over the committed Parquet files of every run: query a data root with SQL, get Arrow back.

One view per table in ``schemas.TABLES``, each ``read_parquet([paths], union_by_name=true)`` over the files
the run manifests list (so uncommitted files are never read); a table with no files yet is an empty view with
the schema's columns, so queries do not depend on what has been written so far.

Locking. A DuckDB file admits one read-write process or several read-only ones, and a reader cannot open it
while a writer holds it. So queries never touch ``catalog.duckdb``: they run on a private in-memory connection
(``Catalog.con``) holding the same views with absolute paths. ``refresh()`` also saves the views into
``root/catalog.duckdb``, for notebooks and the ``duckdb`` CLI, by attaching the file only for the few
milliseconds of the write; if another process holds it (say an open CLI session), saving is retried briefly
and then skipped with a warning, while queries through this object still see fresh views. Nothing ever waits
on or crashes over that file.

A movable catalog file. The saved views name their files relative to the data root (``runs/<run>/...``) and
DuckDB resolves a relative path against the working directory, then against the ``file_search_path``
setting. So a copied or moved root keeps working: open it from the root itself (``cd root && duckdb
catalog.duckdb``), or from anywhere with the root as search path (``duckdb -cmd "SET file_search_path =
'/data/root'" /data/root/catalog.duckdb``; in Python ``duckdb.connect(path, read_only=True,
config={"file_search_path": "/data/root"})``). Each saved view carries a comment with a digest of its
definition: the file is rewritten only when some view changed, so read-only commands leave it alone, and
a root that is not writable is skipped (with a warning only if its saved views are out of date).

Read-only use. ``save=False`` never writes ``catalog.duckdb`` (the read commands: ``sql``, ``runs``,
``report``, ``validate``, ``export``; a read-only root then works as any other). ``restricted=True`` is for
SQL typed by a user (``tracemill sql``): only ``SELECT`` (and ``EXPLAIN`` of one) runs (no COPY, ATTACH, INSTALL, LOAD,
SET, PRAGMA, CREATE ...; ``QueryRefused`` otherwise), DuckDB may open files under the data root only
(``enable_external_access = false`` with ``allowed_directories``), extensions are neither installed nor
loaded, and the configuration is locked so no statement can undo any of this.

One bad run. A run whose manifest or ``runs`` row file cannot be read is left out of the views with a warning
naming it, so the other runs on the root stay queryable; asking for that run by ``run_id`` raises.

A ``Catalog`` is a snapshot as of its last ``refresh()`` (run on open). Its connection is not for concurrent
use from several threads: give each thread its own ``Catalog``.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import warnings
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from storage.layout import DEFAULT_ROOT, DISK_FULL, RunPaths, run_ids
from storage.manifest import Manifest, ManifestError, run_files
from storage.schemas import TABLES

CATALOG_FILE = "catalog.duckdb"
PERSIST_ATTEMPTS = 5  # tries to attach catalog.duckdb when another process holds its lock
PERSIST_BACKOFF_S = 0.05  # first wait between tries; doubles each time (0.05 + 0.1 + 0.2 + 0.4 s in all)
_PERSISTED = "persisted"  # alias of catalog.duckdb while attached
_STAMP = "tracemill view sha256:"  # saved views' comment: this prefix and the digest of the view's definition
_STAMP_CHARS = 16  # hex digits of the digest kept (64 bits: collisions between two definitions do not happen)
_READ_ONLY_STATEMENTS = frozenset({duckdb.StatementType.SELECT})  # what a restricted catalog runs (SHOW too)
_EXPLAIN = re.compile(r"\s*EXPLAIN\s+(?:ANALYZE\s+)?(.*)", re.IGNORECASE | re.DOTALL)  # and the statement explained


class QueryRefused(ValueError):
    """A restricted catalog was given a statement that is not a plain query (COPY, ATTACH, SET, ...)."""


class Catalog:
    """SQL over a data root.

    >>> with Catalog(root) as cat:  # doctest: +SKIP
    ...     cat.sql("SELECT problem_id, avg(value) FROM step_labels GROUP BY 1", run_id="run-1")
    """

    def __init__(self, root: Path | str = DEFAULT_ROOT, *, save: bool = True, restricted: bool = False) -> None:
        """``save=False`` never writes ``catalog.duckdb``; ``restricted`` runs queries only, inside the root."""
        self.root = Path(root).absolute()
        self.save = save and not restricted
        self.restricted = restricted
        self.con = duckdb.connect(config={"autoinstall_known_extensions": not restricted,
                                          "autoload_known_extensions": not restricted})
        self.con.execute("SET TimeZone = 'UTC'")  # timestamps come back in UTC, as they were written
        if restricted:  # allowed_directories can only be set once the database runs, so after connect
            self.con.execute(f"SET allowed_directories = [{_quote(str(self.root) + os.sep)}]")
            self.con.execute("SET enable_external_access = false")
            self.con.execute("SET lock_configuration = true")
        self._empty = {name: _empty_select(self.con, schema) for name, schema in TABLES.items()}
        self._run_rows: dict[str, dict[str, int]] = {}
        self._run_shards: dict[str, int] = {}
        self.refresh()

    @property
    def path(self) -> Path:
        return self.root / CATALOG_FILE

    def refresh(self) -> bool:
        """Rebuild the views from the manifests of all runs; ``True`` if ``catalog.duckdb`` was saved too."""
        files: dict[str, list[Path]] = {}
        self._run_rows, self._run_shards = {}, {}
        for rid in run_ids(self.root):
            paths = RunPaths(self.root, rid)
            try:
                manifest = _readable_run(paths)
            except ManifestError as err:
                warnings.warn(f"run {rid} skipped: {err}", stacklevel=2)
                continue
            for table, table_files in run_files(paths, manifest).items():
                files.setdefault(table, []).extend(table_files)
            self._run_rows[rid] = manifest.rows()
            self._run_shards[rid] = len(manifest.shards)
        self._create_views({name: self._view_body(name, files.get(name, [])) for name in TABLES}, "main")
        if not self.save:
            return False
        return self._persist({name: self._view_body(name, files.get(name, []), self.root) for name in TABLES})

    def sql(self, query: str, run_id: str | None = None, params: list | dict | None = None) -> pa.Table:
        """Run ``query`` and return its result as an Arrow table.

        With ``run_id``, the table names in ``query`` mean that run's rows only: temporary views of the same
        names, read from the run's current manifest, shadow the global views for the duration of the call.
        A restricted catalog raises ``QueryRefused`` for anything but queries, before running any of it.
        """
        if self.restricted:
            _check_read_only(self.con, query)
        if run_id is None:
            return self.con.sql(query, params=params).to_arrow_table()
        paths = RunPaths(self.root, run_id)
        files = run_files(paths, _readable_run(paths))
        self._create_views({name: self._view_body(name, files.get(name, [])) for name in TABLES}, None)
        try:
            return self.con.sql(query, params=params).to_arrow_table()
        finally:
            for name in TABLES:
                self.con.execute(f"DROP VIEW IF EXISTS temp.main.{name}")

    def runs(self) -> pa.Table:
        """One row per run: status, model, engine, times, config hash, shard count and committed rows per table.

        Row counts come from the manifests (no Parquet file is scanned). Runs that have committed shards but
        no ``runs`` row yet appear with a null status.
        """
        counted = [name for name in TABLES if name != "runs"]
        rids = sorted(self._run_rows)
        counts = pa.table(
            {"run_id": pa.array(rids, pa.string()), "n_shards": pa.array([self._run_shards[r] for r in rids], pa.int64())}
            | {f"rows_{t}": pa.array([self._run_rows[r].get(t, 0) for r in rids], pa.int64()) for t in counted}
        )
        self.con.register("_run_counts", counts)
        try:
            return self.con.sql(
                "SELECT run_id, r.status, r.model, r.engine, r.started_at, r.finished_at, r.config_hash, "
                "coalesce(c.n_shards, 0) AS n_shards, "
                + ", ".join(f"coalesce(c.rows_{t}, 0) AS rows_{t}" for t in counted)
                + " FROM _run_counts c FULL OUTER JOIN runs r USING (run_id) ORDER BY r.started_at NULLS LAST, run_id"
            ).to_arrow_table()
        finally:
            self.con.unregister("_run_counts")

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _view_body(self, table: str, files: list[Path], relative_to: Path | None = None) -> str:
        """``read_parquet`` over ``files``, named relative to ``relative_to`` if given (else absolute)."""
        if not files:
            return self._empty[table]
        paths = ", ".join(_quote(str(p.relative_to(relative_to) if relative_to else p)) for p in files)
        return f"SELECT * FROM read_parquet([{paths}], union_by_name = true)"

    def _create_views(self, views: dict[str, str], database: str | None) -> None:
        """Create or replace ``views`` in ``database``, or as temporary views where ``database`` is None."""
        prefix = "TEMPORARY VIEW " if database is None else f"VIEW {database}."
        for name, body in views.items():
            self.con.execute(f"CREATE OR REPLACE {prefix}{name} AS {body}")

    def _persist(self, views: dict[str, str]) -> bool:
        """Save ``views`` (paths relative to the root) into ``catalog.duckdb`` unless it already holds them."""
        stamps = {name: _stamp(body) for name, body in views.items()}
        if self._saved_stamps() == stamps:
            return False
        if not self._writable():
            if self.path.exists():
                warnings.warn(f"{self.path} is not writable; its saved views are out of date", stacklevel=3)
            return False
        existed = self.path.exists()
        for attempt in range(PERSIST_ATTEMPTS):
            try:
                self.con.execute(f"ATTACH {_quote(str(self.path))} AS {_PERSISTED}")
                break
            except duckdb.OperationalError as err:  # IOException (other process) or ResourceInUse (this one)
                if _disk_full(err):
                    if not existed:  # what the failed ATTACH created is no catalog
                        for path in (self.path, self.path.with_name(self.path.name + ".wal")):
                            path.unlink(missing_ok=True)
                    return _not_saved(self.path, err)
                time.sleep(PERSIST_BACKOFF_S * 2**attempt)
        else:
            warnings.warn(f"{self.path} is locked by another process; its views were not updated", stacklevel=3)
            return False
        # CREATE VIEW binds its query, so the relative paths must resolve here, whatever the working directory
        self.con.execute(f"SET file_search_path = {_quote(str(self.root))}")
        try:
            self._create_views(views, _PERSISTED)
            for name, stamp in stamps.items():
                self.con.execute(f"COMMENT ON VIEW {_PERSISTED}.main.{name} IS {_quote(stamp)}")
        except duckdb.Error as err:  # a full disk: the views saved before stay (DuckDB commits atomically)
            if not _disk_full(err):
                raise
            return _not_saved(self.path, err)
        finally:
            self.con.execute("RESET file_search_path")
            try:
                self.con.execute(f"DETACH {_PERSISTED}")
            except duckdb.Error as err:  # its final checkpoint did not fit
                if not _disk_full(err):
                    raise
                _not_saved(self.path, err)
        return True

    def _saved_stamps(self) -> dict[str, str] | None:
        """The stamps of the views saved in ``catalog.duckdb``; None if it is missing or cannot be read now."""
        if not self.path.is_file():
            return None
        try:
            self.con.execute(f"ATTACH {_quote(str(self.path))} AS {_PERSISTED} (READ_ONLY)")
        except duckdb.Error:  # held by a writer, or not a DuckDB file: saving decides what to do
            return None
        try:
            rows = self.con.execute("SELECT view_name, comment FROM duckdb_views() WHERE database_name = $db "
                                    "AND schema_name = 'main'", {"db": _PERSISTED}).fetchall()
        finally:
            self.con.execute(f"DETACH {_PERSISTED}")
        return {name: comment for name, comment in rows if name in TABLES}

    def _writable(self) -> bool:
        """Whether ``catalog.duckdb`` (and its write-ahead log beside it) can be written under the root."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError:
            return False
        return os.access(self.root, os.W_OK) and (not self.path.exists() or os.access(self.path, os.W_OK))


def _disk_full(err: duckdb.Error) -> bool:
    """Whether DuckDB failed for want of space (it reports the OS error as text only)."""
    return any(os.strerror(code) in str(err) for code in DISK_FULL)


def _not_saved(path: Path, err: duckdb.Error) -> bool:
    warnings.warn(f"{path} not updated: {str(err).splitlines()[0]}", stacklevel=4)
    return False


def _readable_run(paths: RunPaths) -> Manifest:
    """The run's manifest, once it and the run's ``runs`` row file are known readable (else ``ManifestError``).

    The row file is the one file of a run that is not in its manifest; a damaged one would break the ``runs``
    view for every run, so it is checked here (its footer only) along with the manifest.
    """
    manifest = Manifest.load(paths)
    if paths.run_file.exists():
        try:
            pq.read_metadata(paths.run_file)
        except (OSError, pa.ArrowException) as err:
            raise ManifestError(f"{paths.run_file}: unreadable run row: {err}") from None
    return manifest


def _check_read_only(con: duckdb.DuckDBPyConnection, query: str) -> None:
    """Raise ``QueryRefused`` unless every statement of ``query`` is a plain query, or ``EXPLAIN [ANALYZE]``
    of one (``EXPLAIN ANALYZE`` runs the statement it explains, so that statement is checked in turn)."""
    for statement in con.extract_statements(query):
        if statement.type == duckdb.StatementType.EXPLAIN:
            explained = _EXPLAIN.fullmatch(statement.query)
            if explained:
                _check_read_only(con, explained.group(1))
                continue
        if statement.type not in _READ_ONLY_STATEMENTS:
            kind = statement.type.name
            raise QueryRefused(f"{kind} statements are refused: tracemill sql runs queries only "
                               "(SELECT, SHOW, DESCRIBE, EXPLAIN); pass --unsafe for full DuckDB")


def _empty_select(con: duckdb.DuckDBPyConnection, schema: pa.Schema) -> str:
    """A query with ``schema``'s columns and no rows (DuckDB types derived from the Arrow schema)."""
    types = con.from_arrow(schema.empty_table()).types
    columns = ", ".join(f'CAST(NULL AS {t}) AS "{f.name}"' for f, t in zip(schema, types, strict=True))
    return f"SELECT {columns} LIMIT 0"


def _stamp(body: str) -> str:
    return _STAMP + hashlib.sha256(body.encode()).hexdigest()[:_STAMP_CHARS]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
