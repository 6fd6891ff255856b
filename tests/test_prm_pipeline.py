"""``train-prm`` and ``score`` end to end on the tiny model, reading a PRM export the way the export writes it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.score import PRM_SCORES, score_file
from pipelines.train_prm import REPORT_FILE, load_prm_config, load_rows, split_rows, train_prm
from tests.tiny_model import build_tiny_model_dir
from verifier.prm import ProcessRewardModel

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
EXPORT_SCHEMA = pa.schema([  # the export's prm.parquet: masked steps are nulls inside the label lists
    ("example_id", pa.string()), ("problem_id", pa.string()), ("prompt", pa.string()),
    ("completions", pa.list_(pa.string())), ("labels", pa.list_(pa.bool_())),
    ("soft_labels", pa.list_(pa.float64())), ("first_error", pa.int32()), ("split", pa.string()),
])


def export_rows(n: int) -> list[dict]:
    """Two solutions per problem; odd solutions go wrong at step 1 ("X"); the last step is masked in some."""
    rows = []
    for i in range(n):
        bad, masked = i % 2 == 1, i % 3 == 0
        rows.append({
            "example_id": f"e{i}", "problem_id": f"p{i // 2}", "prompt": f"Add {i // 2} and 1.",
            "completions": ["ok step", "bad X" if bad else "fine", "done"],
            "labels": [True, not bad, None if masked else not bad],
            "soft_labels": [1.0, 0.25 if bad else 0.75, None if masked else (0.0 if bad else 1.0)],
            "first_error": 1 if bad else -1, "split": "test" if i // 2 >= n // 2 - 1 else "train",
        })
    return rows


def test_recipes_parse_and_unknown_override_fails():
    model, demo = load_prm_config(CONFIGS / "prm_demo.toml")
    assert demo.train_mode == "head" and model.device == "cpu"
    model, gpu = load_prm_config(CONFIGS / "prm_gpu.toml")
    assert gpu.train_mode == "full" and gpu.bf16 and gpu.label_kind == "soft" and model.device == "cuda"
    with pytest.raises(ValueError, match="unknown"):
        load_prm_config(CONFIGS / "prm_demo.toml", {"epoch": 3})


@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_train_on_export_folder_then_score_every_step(tmp_path, one_torch_thread, kind):
    body = build_tiny_model_dir(tmp_path / "tiny")
    export, rows = tmp_path / "export", export_rows(12)
    for name in ("prm", "sft"):
        (export / name).mkdir(parents=True)
    for split in ("train", "test"):  # as `tracemill export --test-fraction` writes them
        part = [r for r in rows if r["split"] == split]
        pq.write_table(pa.Table.from_pylist(part, schema=EXPORT_SCHEMA), export / "prm" / f"{split}.parquet")
    pq.write_table(pa.table({"prompt": ["Q"], "completion": ["A"]}), export / "sft" / "train.parquet")
    (export / "README.md").write_text("dataset card")  # other export files are not read
    overrides = {"backbone": str(body), "epochs": 2, "max_length": 64, "label_kind": kind}
    report = train_prm(export, tmp_path / "prm", CONFIGS / "prm_demo.toml", overrides)
    n_train = sum(r["split"] == "train" for r in rows)
    trained = sum(t is not None for r in rows if r["split"] == "train"
                  for t in r["labels" if kind == "hard" else "soft_labels"])
    assert report.n_examples == n_train and report.n_steps == trained and len(report.epoch_losses) == 2
    assert report.n_eval_examples == len(rows) - n_train and "eval_loss" in report.eval_metrics
    saved = json.loads((tmp_path / "prm" / REPORT_FILE).read_text())
    assert saved["n_examples"] == n_train and saved["eval_metrics"] == report.eval_metrics
    loaded = ProcessRewardModel.load(tmp_path / "prm")
    assert all(not math.isnan(s) for ss in loaded.score_batch([(r["prompt"], r["completions"]) for r in rows])
               for s in ss)
    table = score_file(tmp_path / "prm", export, tmp_path / "scores.parquet")
    assert table.schema == PRM_SCORES and table.num_rows == 3 * len(rows)
    back = pq.read_table(tmp_path / "scores.parquet").to_pylist()
    assert [(r["example_id"], r["step_index"]) for r in back[:2]] == [("e0", 0), ("e0", 1)]  # train first
    assert all(0.0 <= r["score"] <= 1.0 for r in back)


def test_shard_folder_with_old_rows_is_read_unchanged(tmp_path):
    new = export_rows(2)
    old = [{"prompt": "Q?", "completions": ["a", "b"], "labels": [0.5, 0.0]}]  # TRL soft export: float labels
    pq.write_table(pa.Table.from_pylist(new, schema=EXPORT_SCHEMA), tmp_path / "part-0.parquet")
    pq.write_table(pa.Table.from_pylist(old), tmp_path / "part-1.parquet")
    rows = load_rows(tmp_path)
    assert len(rows) == 3 and rows[0]["labels"] == new[0]["labels"] and rows[2]["labels"] == [0.5, 0.0]
    pq.write_table(pa.Table.from_pylist(old), tmp_path / "prm.parquet")  # an older export's one file
    assert load_rows(tmp_path) == old


def test_eval_fraction_never_puts_one_problem_on_both_sides():
    rows = [{**r, "split": None} for r in export_rows(40)]
    train, held = split_rows(rows, eval_fraction=0.25, seed=3)
    assert len(train) + len(held) == len(rows) and len({r["problem_id"] for r in held}) == 5
    assert not {r["problem_id"] for r in train} & {r["problem_id"] for r in held}
    assert split_rows(rows, eval_fraction=0.0, seed=3) == (rows, [])
    with pytest.raises(ValueError, match="split"):
        split_rows([{**rows[0], "split": "validation"}], eval_fraction=0.0, seed=0)
