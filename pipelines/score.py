"""``tracemill score``: PRM scores for every step of every solution in a file, written as Parquet.

Input rows are read by ``pipelines.train_prm.load_rows`` and may be PRM-dataset rows
(``example_id``/``prompt``/``completions``) or ProcessBench rows (``id``/``problem``/``steps``). Output: one
row per step, ``PRM_SCORES`` below, so ``tracemill sql`` can join scores to solutions by ``example_id``.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.train_prm import load_rows
from verifier.prm import ProcessRewardModel

PRM_SCORES = pa.schema([
    ("example_id", pa.string()),  # example_id / id of the input row (its index if it has none)
    ("step_index", pa.int32()),  # 0-based
    ("score", pa.float64()),  # P(step is good); NaN where the step was cut by max_length
    ("model", pa.string()),  # the PRM folder
])
QUESTION_KEYS, STEPS_KEYS, ID_KEYS = ("prompt", "problem", "question"), ("completions", "steps"), ("example_id", "id")


def _first(row: dict, keys: tuple[str, ...]) -> object:
    return next((row[k] for k in keys if row.get(k) is not None), None)


def score_rows(model: ProcessRewardModel, rows: list[dict], model_name: str = "") -> pa.Table:
    items = [(str(_first(r, QUESTION_KEYS) or ""), list(_first(r, STEPS_KEYS) or [])) for r in rows]
    scores = model.score_batch(items)
    out = [{"example_id": str(_first(r, ID_KEYS) or i), "step_index": j, "score": s, "model": model_name}
           for i, (r, ss) in enumerate(zip(rows, scores, strict=True)) for j, s in enumerate(ss)]
    return pa.Table.from_pylist(out, schema=PRM_SCORES)


def score_file(model_dir: Path, data: Path, out: Path, limit: int = 0) -> pa.Table:
    """Score ``data`` with the PRM saved in ``model_dir``; write ``out`` (Parquet) and return the table."""
    table = score_rows(ProcessRewardModel.load(model_dir), load_rows(data, limit), str(model_dir))
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out)
    return table
