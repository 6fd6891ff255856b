"""``tracemill train-prm``: train a process reward model on a PRM export and save it.

Input rows are stepwise examples ``{prompt, completions, labels[, soft_labels, problem_id, split]}`` read
unchanged from the export: the export folder (``DIR/prm/{train,test}.parquet``), its ``prm`` folder, a
``prm.parquet`` file or a folder holding one, a folder of Parquet shards (``prm_dataset``), a JSONL file or a
JSON array. A None label marks a masked step (context, not trained on).
Held-out rows: the ``split`` column (``train``/``test``) when present, else ``eval_fraction`` of the problems
(grouped by ``problem_id``, so no problem is on both sides). Settings come from a TOML recipe
(``configs/prm_demo.toml``, ``configs/prm_gpu.toml``) whose flat keys are ``verifier.prm.PrmConfig`` and
``TrainConfig`` fields, plus ``--set`` overrides; unknown keys are errors. Several GPUs:
``torchrun --nproc_per_node 8 -m pipelines.cli train-prm ...`` (the Trainer runs DDP).

Example::

    >>> train_prm(Path("exports/prm"), Path("models/prm"), Path("configs/prm_demo.toml"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import tomllib

from verifier.prm import PrmConfig, ProcessRewardModel, TrainConfig, TrainReport, train

REPORT_FILE, CHECKPOINT_DIR = "train_report.json", "checkpoints"
EXPORT_DIR, EXPORT_FILE = "prm", "prm.parquet"  # `tracemill export` writes DIR/prm/; older exports prm.parquet
TRAIN_SPLIT, EVAL_SPLIT = "train", "test"  # values of the export's `split` column


def load_rows(path: Path, limit: int = 0) -> list[dict]:
    """Rows of a Parquet file, an export folder (its ``prm/`` split files, or its ``prm.parquet``), a folder
    of Parquet shards, a JSONL file or a JSON array file; the first ``limit`` (0 = all)."""
    if path.is_dir():
        path = path / EXPORT_DIR if (path / EXPORT_DIR).is_dir() else path  # not the export's sft/ or grpo/
        shards = [path / EXPORT_FILE] if (path / EXPORT_FILE).is_file() else \
            sorted(path.rglob("*.parquet"), key=lambda f: (f.stem != TRAIN_SPLIT, str(f)))  # train first (limit)
        if not shards:
            raise ValueError(f"no Parquet files in {path}")
        rows = [r for shard in shards for r in pq.read_table(shard).to_pylist()]  # shards may differ in types
    elif path.suffix == ".parquet":
        rows = pq.read_table(path).to_pylist()
    else:
        text = path.read_text(encoding="utf-8")
        rows = json.loads(text) if text.lstrip().startswith("[") else \
            [json.loads(line) for line in text.splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def split_rows(rows: Sequence[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, eval): by the ``split`` column when rows carry it, else ``eval_fraction`` of the problems.

    Problems are ``problem_id`` (the prompt when a row has none), shuffled with ``seed``, so one problem's
    solutions never land on both sides.
    """
    if any(r.get("split") is not None for r in rows):
        unknown = {r.get("split") for r in rows} - {TRAIN_SPLIT, EVAL_SPLIT}
        if unknown:
            raise ValueError(f"split must be {TRAIN_SPLIT!r} or {EVAL_SPLIT!r}, got {sorted(map(str, unknown))}")
        return [r for r in rows if r["split"] == TRAIN_SPLIT], [r for r in rows if r["split"] == EVAL_SPLIT]
    if not eval_fraction:
        return list(rows), []
    problems = sorted({_problem(r) for r in rows})
    random.Random(seed).shuffle(problems)
    held = set(problems[:max(1, round(eval_fraction * len(problems)))])
    return [r for r in rows if _problem(r) not in held], [r for r in rows if _problem(r) in held]


def _problem(row: dict) -> str:
    return str(row.get("problem_id") or row["prompt"])


def load_prm_config(path: Path | None, overrides: dict[str, Any] | None = None) -> tuple[PrmConfig, TrainConfig]:
    """The recipe's flat keys split between the model config and the training config."""
    data = {**(tomllib.loads(path.read_text(encoding="utf-8")) if path else {}), **(overrides or {})}
    model_keys = {f.name for f in fields(PrmConfig)}
    unknown = sorted(set(data) - model_keys - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise ValueError(f"unknown PRM config key(s) {unknown}")
    return (PrmConfig.from_dict({k: v for k, v in data.items() if k in model_keys}),
            TrainConfig.from_dict({k: v for k, v in data.items() if k not in model_keys}))


def train_prm(data: Path, out: Path, config: Path | None = None, overrides: dict[str, Any] | None = None,
              limit: int = 0) -> TrainReport:
    """Build the PRM from the config's backbone, train on ``data``, save to ``out`` with a JSON report."""
    model_cfg, train_cfg = load_prm_config(config, overrides)
    rows = [r for r in load_rows(data, limit) if r.get("completions")]
    train_rows, eval_rows = split_rows(rows, train_cfg.eval_fraction, train_cfg.seed)
    model = ProcessRewardModel.build(model_cfg, train_cfg.seed)
    report = train(model, train_rows, train_cfg, out / CHECKPOINT_DIR, eval_rows)
    if _is_main_process():
        model.save(out)
        (out / REPORT_FILE).write_text(json.dumps(asdict(report), indent=2), encoding="utf-8")
    return report


def _is_main_process() -> bool:
    """Under torchrun only rank 0 writes the model folder."""
    import torch.distributed as dist

    return not dist.is_initialized() or dist.get_rank() == 0
