"""``tracemill train-prm``: train a process reward model on a PRM dataset and save it.

Input rows are TRL stepwise examples ``{prompt, completions, labels}`` (optionally ``soft_labels``): a
``prm_dataset`` Parquet file or folder of shards, a JSONL file, or a JSON array. Settings come from a TOML
recipe (``configs/prm_demo.toml``, ``configs/prm_gpu.toml``) whose keys are ``verifier.prm.PrmConfig``
fields, plus dotted-free overrides; unknown keys are errors.

Example::

    >>> train_prm(Path("runs/r1/prm_dataset"), Path("models/prm"), Path("configs/prm_demo.toml"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import tomllib

from verifier.prm import PrmConfig, ProcessRewardModel, TrainReport, train

REPORT_FILE = "train_report.json"


def load_rows(path: Path, limit: int = 0) -> list[dict]:
    """Rows of a Parquet file/folder, a JSONL file or a JSON array file; the first ``limit`` (0 = all)."""
    if path.is_dir() or path.suffix == ".parquet":
        rows = pq.read_table(path).to_pylist()
    else:
        text = path.read_text(encoding="utf-8")
        rows = json.loads(text) if text.lstrip().startswith("[") else \
            [json.loads(line) for line in text.splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def load_prm_config(path: Path | None, overrides: dict[str, Any] | None = None) -> PrmConfig:
    data = tomllib.loads(path.read_text(encoding="utf-8")) if path else {}
    return PrmConfig.from_dict({**data, **(overrides or {})})


def train_prm(data: Path, out: Path, config: Path | None = None, overrides: dict[str, Any] | None = None,
              limit: int = 0) -> TrainReport:
    """Build the PRM from the config's backbone, train on ``data``, save to ``out`` with a JSON report."""
    cfg = load_prm_config(config, overrides)
    rows = [r for r in load_rows(data, limit) if r.get("completions")]
    model = ProcessRewardModel.build(cfg)
    report = train(model, rows)
    model.save(out)
    (out / REPORT_FILE).write_text(json.dumps(asdict(report), indent=2), encoding="utf-8")
    return report
