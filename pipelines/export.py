"""``tracemill dataset`` and ``tracemill export``: stored runs -> ``prm_dataset``/``sft_dataset`` -> trainer files.

``build_datasets`` turns labeled solutions into ``prm_dataset`` rows and mined traces into ``sft_dataset``
rows and commits them to the run. ``export`` writes the files a trainer reads unchanged:

- ``trl-prm``: ``prm.parquet`` with ``{prompt, completions, labels}`` (TRL ``PRMTrainer``, stepwise
  supervision); ``label_kind="soft"`` writes MC values as float labels; ``math_shepherd=True`` also writes
  ``prm_math_shepherd.jsonl`` (``{input, label}`` with the step tag);
- ``trl-sft``: ``sft.parquet`` with ``messages`` or ``{prompt, completion}`` (TRL ``SFTTrainer``);
- ``jsonl``: every named table as ``<table>.jsonl``, all columns.

Each loads with ``datasets.load_dataset("parquet" | "json", data_files=...)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cluster.engine import request_key
from pipelines.formats import (
    PrmConfig,
    SftConfig,
    prm_table,
    sft_table,
    to_math_shepherd,
    to_trl_prm,
    to_trl_sft,
)
from pipelines.mine import load_labels, load_solutions
from storage.catalog import Catalog
from storage.layout import DEFAULT_ROOT
from storage.schemas import TABLES
from storage.shards import ShardWriter


def build_datasets(root: Path = DEFAULT_ROOT, run_id: str = "", strategy: str | None = None,
                   truncate_after_error: bool = False, trace_kinds: tuple[str, ...] = ("shortest", "backtrack",
                                                                                        "journey"),
                   user_template: str = "{question}", system: str = "") -> dict[str, int]:
    """Build and commit ``prm_dataset`` (every fully labeled solution) and ``sft_dataset`` (``trace_kinds``)."""
    prm_cfg = PrmConfig(truncate_after_error=truncate_after_error)
    sft_cfg = SftConfig(user_template=user_template, system=system)
    with Catalog(root) as cat:
        questions = {r["problem_id"]: r["question"] for r in
                     cat.sql("SELECT problem_id, question FROM problems", run_id=run_id).to_pylist()}
        prm = prm_table(load_solutions(cat, run_id), load_labels(cat, run_id, strategy), questions, prm_cfg,
                        run_id)
        traces = cat.sql("SELECT * FROM traces WHERE list_contains($kinds, kind) ORDER BY problem_id, trace_id",
                         run_id=run_id, params={"kinds": list(trace_kinds)})
    sft = sft_table(traces, questions, sft_cfg, run_id)
    shard = "datasets-" + request_key(strategy, truncate_after_error, *trace_kinds, user_template, system)
    with ShardWriter(root, run_id) as writer:
        writer.commit(shard, {"prm_dataset": prm, "sft_dataset": sft})
    return {"prm_dataset": prm.num_rows, "sft_dataset": sft.num_rows}


def _write_parquet(rows: list[dict], path: Path) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _write_jsonl(rows: list[dict], path: Path) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    return path


def _export_prm(tables: dict[str, pa.Table], out_dir: Path, opts: dict) -> list[Path]:
    table = tables["prm_dataset"]
    paths = [_write_parquet(to_trl_prm(table, opts["label_kind"]), out_dir / "prm.parquet")]
    if opts["math_shepherd"]:
        paths.append(_write_jsonl(to_math_shepherd(table), out_dir / "prm_math_shepherd.jsonl"))
    return paths


def _export_sft(tables: dict[str, pa.Table], out_dir: Path, opts: dict) -> list[Path]:
    return [_write_parquet(to_trl_sft(tables["sft_dataset"], opts["sft_style"]), out_dir / "sft.parquet")]


def _export_jsonl(tables: dict[str, pa.Table], out_dir: Path, opts: dict) -> list[Path]:
    return [_write_jsonl(t.to_pylist(), out_dir / f"{name}.jsonl") for name, t in tables.items()]


EXPORTERS: dict[str, tuple[tuple[str, ...] | None, Callable[[dict[str, pa.Table], Path, dict], list[Path]]]] = {
    "trl-prm": (("prm_dataset",), _export_prm),  # (tables it needs; None = the ones asked for, exporter)
    "trl-sft": (("sft_dataset",), _export_sft),
    "jsonl": (None, _export_jsonl),
}


def export_tables(format: str, out_dir: Path, tables: dict[str, pa.Table], label_kind: str = "hard",
                  sft_style: str = "messages", math_shepherd: bool = False) -> list[Path]:
    """Write already loaded tables in ``format`` (a key of ``EXPORTERS``); returns the files written."""
    if format not in EXPORTERS:
        raise ValueError(f"unknown export format {format!r}; known: {sorted(EXPORTERS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    opts = {"label_kind": label_kind, "sft_style": sft_style, "math_shepherd": math_shepherd}
    return EXPORTERS[format][1](tables, out_dir, opts)


def export(format: str, out_dir: Path, root: Path = DEFAULT_ROOT, run_id: str | None = None,
           tables: tuple[str, ...] = ("traces", "prm_dataset", "sft_dataset"), label_kind: str = "hard",
           sft_style: str = "messages", math_shepherd: bool = False) -> list[Path]:
    """Load the tables ``format`` needs (``tables`` for jsonl) from the catalog, of one run or all, and write."""
    if format not in EXPORTERS:
        raise ValueError(f"unknown export format {format!r}; known: {sorted(EXPORTERS)}")
    names = EXPORTERS[format][0] or tables
    unknown = [n for n in names if n not in TABLES]
    if unknown:
        raise ValueError(f"unknown tables {unknown}; known: {sorted(TABLES)}")
    with Catalog(root) as cat:
        loaded = {name: cat.sql(f"SELECT * FROM {name}", run_id=run_id) for name in names}
    return export_tables(format, out_dir, loaded, label_kind, sft_style, math_shepherd)
