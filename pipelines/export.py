"""``tracemill export``: a run's stored rows -> ``prm_dataset``/``sft_dataset`` -> a folder trainers load.

``build_datasets`` turns labeled solutions into ``prm_dataset`` rows and mined traces into ``sft_dataset``
rows and commits them as the run's one ``datasets`` shard, *replacing* it: building again (at the end of
``run``, then by every ``export``) never adds a second copy, and identical rows leave the files untouched
(checked without taking the run's lock, so exporting an up-to-date run from a read-only root works).

``export`` writes one folder per dataset plus a dataset card, so ``datasets.load_dataset(DIR, "prm")``
(``"sft"``, ``"grpo"``, ``"math_shepherd"``) works as it is::

    DIR/README.md               card: configs, features, provenance (run, model, strategy, config hash, counts)
    DIR/prm/train.parquet       {example_id, problem_id, prompt, completions, labels, soft_labels, first_error}
    DIR/sft/train.parquet       conversational {prompt, completion} (or another SFT style)
    DIR/grpo/train.parquet      {prompt, answer}: the reward functions of verifier/rewards.py read ``answer``
    DIR/<name>/test.parquet     with --test-fraction: whole problems held out, the same ones in every dataset

Every file is written to a staging folder inside DIR first and renamed into place, so a killed export
leaves the previous files or the new ones, never a truncated file that looks complete. Exporting the same
run twice gives byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.config import run_delimiter
from pipelines.mine import load_labels, load_solutions
from search.traces.formats import (
    PrmConfig,
    SftConfig,
    prm_table,
    sft_table,
    to_grpo,
    to_math_shepherd,
    to_trl_prm,
    to_trl_sft,
)
from storage.catalog import Catalog
from storage.layout import DEFAULT_ROOT, replace_synced
from storage.runs import RunRecord, require_run
from storage.schemas import TABLES
from storage.shards import ShardWriter, holds

DATASETS_SHARD = "datasets"  # the run's one derived shard holding prm_dataset, sft_dataset and their filtered rows
CARD = "README.md"
SPLITS = ("train", "test")


@dataclass(frozen=True)
class BuildOptions:
    """How the stored datasets are built; by default the run's own settings (``from_run``)."""

    prm: PrmConfig = field(default_factory=PrmConfig)
    sft: SftConfig = field(default_factory=SftConfig)

    @classmethod
    def from_run(cls, record: RunRecord, after_error: str | None = None) -> BuildOptions:
        """The run's delimiter, system prompt and ``mining.prm_after_error``; ``after_error`` overrides it."""
        cfg = json.loads(record.config_json or "{}")
        sampling, mining = cfg.get("sampling", {}), cfg.get("mining", {})
        prm = PrmConfig(after_error=after_error or mining.get("prm_after_error", "cut"),
                        delimiter=run_delimiter(record))
        return cls(prm, SftConfig(system=sampling.get("system_prompt", ""),
                                  tools=bool(cfg.get("tools", {}).get("python", False))))


def build_datasets(root: Path = DEFAULT_ROOT, run_id: str = "", options: BuildOptions | None = None,
                   strategy: str | None = None) -> dict[str, int]:
    """Build ``prm_dataset`` and ``sft_dataset`` (every mined trace) and replace the run's datasets shard."""
    record = require_run(root, run_id)
    opts = options or BuildOptions.from_run(record)
    with Catalog(root, save=False) as cat:
        questions = {r["problem_id"]: r["question"] for r in
                     cat.sql("SELECT problem_id, question FROM problems", run_id=run_id).to_pylist()}
        prm = prm_table(load_solutions(cat, run_id), load_labels(cat, run_id, strategy), questions, opts.prm,
                        run_id)
        traces = cat.sql("SELECT * FROM traces ORDER BY problem_id, kind, trace_id", run_id=run_id)
    sft = sft_table(traces, questions, opts.sft, run_id)
    tables = {"prm_dataset": prm.rows, "sft_dataset": sft, "filtered": prm.filtered}
    if not holds(root, run_id, DATASETS_SHARD, tables):  # up to date: no lock, so a read-only root works
        with ShardWriter(root, run_id) as writer:
            writer.replace(DATASETS_SHARD, tables)
    return {"prm_dataset": prm.rows.num_rows, "sft_dataset": sft.num_rows, "prm_filtered": prm.filtered.num_rows}


def split_of(problem_id: str, test_fraction: float, seed: int = 0) -> str:
    """``"test"`` for a stable ``test_fraction`` of problems (by hash), else ``"train"``: grouped by problem."""
    h = int(hashlib.sha256(f"{seed}\x1f{problem_id}".encode()).hexdigest()[:16], 16) / 2**64
    return "test" if h < test_fraction else "train"


def with_split(table: pa.Table, test_fraction: float, seed: int = 0) -> pa.Table:
    splits = [split_of(pid, test_fraction, seed) for pid in table.column("problem_id").to_pylist()]
    return table.append_column("split", pa.array(splits, pa.string()))


@dataclass(frozen=True)
class ExportOptions:
    label_kind: str = "hard"  # prm ``labels``: hard (bool) or soft (MC value)
    sft_style: str = "conversational"  # a key of formats.SFT_STYLES
    math_shepherd: bool = False  # also the Math-Shepherd tagged PRM dataset
    test_fraction: float = 0.0  # share of problems held out as the test split (0: train only)
    seed: int = 0  # of the split
    after_error: str | None = None  # override the run's mining.prm_after_error (cut | mask)

    def __post_init__(self) -> None:
        if not 0 <= self.test_fraction < 1:
            raise ValueError(f"test_fraction must lie in [0, 1), got {self.test_fraction}")


Rows = Callable[[dict[str, pa.Table], ExportOptions, BuildOptions], list[dict]]
# dataset name -> (the stored table it comes from, rows a trainer reads)
DATASETS: dict[str, tuple[str, Rows]] = {
    "prm": ("prm_dataset", lambda t, o, b: to_trl_prm(t["prm_dataset"], o.label_kind)),
    "math_shepherd": ("prm_dataset", lambda t, o, b: to_math_shepherd(t["prm_dataset"])),
    "sft": ("sft_dataset", lambda t, o, b: to_trl_sft(t["sft_dataset"], o.sft_style)),
    "grpo": ("problems", lambda t, o, b: to_grpo(t["problems"], b.sft)),
}
FORMATS: dict[str, tuple[str, ...]] = {  # --format -> datasets written
    "hf": ("prm", "sft", "grpo"),
    "trl-prm": ("prm",),
    "trl-sft": ("sft",),
    "grpo": ("grpo",),
    "jsonl": (),  # raw tables instead: <table>.jsonl, every column
}


def export(format: str, out_dir: Path, root: Path = DEFAULT_ROOT, run_id: str = "",
           options: ExportOptions | None = None, tables: tuple[str, ...] = ("traces", "prm_dataset", "sft_dataset"),
           ) -> list[Path]:
    """Rebuild the run's datasets (a no-op when nothing changed) and write ``format``; returns the files."""
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; known: {sorted(FORMATS)}")
    unknown = [n for n in tables if n not in TABLES]
    if unknown:
        raise ValueError(f"unknown tables {unknown}; known: {sorted(TABLES)}")
    opts = options or ExportOptions()
    record = require_run(root, run_id)
    build = BuildOptions.from_run(record, opts.after_error)
    build_datasets(root, run_id, build)
    names = list(FORMATS[format]) + (["math_shepherd"] if opts.math_shepherd and format in ("hf", "trl-prm") else [])
    needed = sorted({DATASETS[n][0] for n in names}) if format != "jsonl" else list(tables)
    with Catalog(root, save=False) as cat:
        loaded = {name: cat.sql(f"SELECT * FROM {name}", run_id=run_id) for name in needed}
    with _Staging(out_dir) as stage:
        if format == "jsonl":
            for name, table in loaded.items():
                stage.write_jsonl(table.to_pylist(), f"{name}.jsonl")
        else:
            split = {name: with_split(t, opts.test_fraction, opts.seed) for name, t in loaded.items()}
            counts = {name: stage.write_dataset(name, DATASETS[name][1](split, opts, build)) for name in names}
            counts |= stage.kept_datasets(DATASETS.keys() - counts.keys())
            stage.write_text(dataset_card(record, counts, stage.features, opts), CARD)
        return stage.commit()


class _Staging:
    """Files written under ``out/.staging-<pid>-<random>`` and renamed into ``out`` only by ``commit``."""

    def __init__(self, out_dir: Path) -> None:
        self.out = Path(out_dir)
        self.dir = self.out / f".staging-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.files: list[str] = []
        self.features: dict[str, pa.Schema] = {}
        self.datasets: list[str] = []

    def __enter__(self) -> _Staging:
        self.dir.mkdir(parents=True)
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def _path(self, rel: str) -> Path:
        self.files.append(rel)
        path = self.dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write_dataset(self, name: str, rows: list[dict]) -> dict[str, int]:
        """One Parquet file per non-empty split (the ``split`` column kept); returns rows per split."""
        self.datasets.append(name)
        counts = {}
        for split in SPLITS:
            part = [r for r in rows if r.get("split", "train") == split]
            if part:
                table = pa.Table.from_pylist(part)
                self.features[name] = table.schema
                with open(self._path(f"{name}/{split}.parquet"), "wb") as f:
                    pq.write_table(table, f)
                    os.fsync(f.fileno())
                counts[split] = len(part)
        return counts

    def kept_datasets(self, names: set[str]) -> dict[str, dict[str, int]]:
        """Rows per split of datasets an earlier export left in ``out`` (so the card keeps listing them)."""
        counts: dict[str, dict[str, int]] = {}
        for name in sorted(names):
            for split in SPLITS:
                path = self.out / name / f"{split}.parquet"
                if path.exists():
                    meta = pq.ParquetFile(path)
                    counts.setdefault(name, {})[split] = meta.metadata.num_rows
                    self.features[name] = meta.schema_arrow
        return counts

    def write_jsonl(self, rows: list[dict], rel: str) -> None:
        with open(self._path(rel), "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def write_text(self, text: str, rel: str) -> None:
        with open(self._path(rel), "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def commit(self) -> list[Path]:
        """Rename every staged file into place; a dataset folder loses the split files this export lacks."""
        for name in self.datasets:
            for old in (self.out / name).glob("*.parquet"):
                if f"{name}/{old.name}" not in self.files:
                    old.unlink()
        out = []
        for rel in self.files:
            replace_synced(self.dir / rel, self.out / rel)
            out.append(self.out / rel)
        return out


def dataset_card(record: RunRecord, counts: dict[str, dict[str, int]], features: dict[str, pa.Schema],
                 opts: ExportOptions) -> str:
    """README.md with ``configs:`` per dataset (what ``load_dataset(DIR, name)`` reads) and provenance."""
    cfg = json.loads(record.config_json or "{}")
    labeling = cfg.get("labeling", {})
    lines = ["---", "configs:"]
    for name, splits in counts.items():
        if splits:
            lines += [f"- config_name: {name}", "  data_files:"]
            lines += [f"  - split: {s}\n    path: {name}/{s}.parquet" for s in splits]
    lines += ["---", "", f"# tracemill export of run `{record.run_id}`", "",
              "Generated by tracemill: sampled step-by-step solutions, step labels from Monte Carlo rollouts,",
              "mined traces. Load one dataset with `datasets.load_dataset(\"<this folder>\", \"prm\")`.", "",
              "## Provenance", "",
              f"- run id: `{record.run_id}`", f"- model: `{record.model}`", f"- engine: `{record.engine}`",
              f"- labeling strategy: `{labeling.get('strategy')}` with options "
              f"`{json.dumps(labeling.get('options', {}), sort_keys=True)}`",
              f"- config hash: `{record.config_hash}`", f"- code version: `{record.code_version}`",
              f"- PRM labels: `{opts.label_kind}`; SFT style: `{opts.sft_style}`; "
              f"test fraction {opts.test_fraction} (split by problem, seed {opts.seed})", "",
              "## Datasets", "", "| dataset | split | rows |", "|---|---|---|"]
    lines += [f"| {name} | {s} | {n} |" for name, splits in counts.items() for s, n in splits.items()]
    lines += ["", "## Features", ""]
    for name, schema in features.items():
        lines += [f"### {name}", ""] + [f"- `{f.name}`: {f.type}" for f in schema] + [""]
    lines += ["Null entries in `labels`/`soft_labels` are masked steps (context, not supervision); "
              "`soft_labels` is the step's MC value (null where the step has no rollouts of its own).", ""]
    return "\n".join(lines)
