"""``train-prm`` and ``score`` jobs end to end on the tiny model: config recipe, save, Parquet scores."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from pipelines.score import PRM_SCORES, score_file
from pipelines.train_prm import REPORT_FILE, load_prm_config, train_prm
from tests.tiny_model import build_tiny_model_dir

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_recipes_parse_and_unknown_override_fails():
    assert load_prm_config(CONFIGS / "prm_demo.toml").freeze_body
    gpu = load_prm_config(CONFIGS / "prm_gpu.toml")
    assert not gpu.freeze_body and gpu.dtype == "bfloat16" and gpu.label_kind == "soft"
    with pytest.raises(ValueError, match="unknown"):
        load_prm_config(CONFIGS / "prm_demo.toml", {"epoch": 3})


@pytest.fixture
def one_thread():
    """Shared cores: tiny backward passes spin-wait badly on more than one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_train_then_score_writes_report_model_and_step_scores(tmp_path, one_thread):
    body = build_tiny_model_dir(tmp_path / "tiny")
    rows = [{"example_id": f"e{i}", "prompt": "Q?", "completions": ["ok", "bad X" if i % 2 else "fine"],
             "labels": [True, i % 2 == 0]} for i in range(8)]
    data = tmp_path / "prm.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    overrides = {"backbone": str(body), "epochs": 2, "max_length": 64}
    report = train_prm(data, tmp_path / "prm", CONFIGS / "prm_demo.toml", overrides)
    assert report.n_steps == 16 and len(report.epoch_losses) == 2
    assert json.loads((tmp_path / "prm" / REPORT_FILE).read_text())["n_examples"] == 8
    table = score_file(tmp_path / "prm", data, tmp_path / "scores.parquet")
    assert table.schema == PRM_SCORES and table.num_rows == 16
    back = pq.read_table(tmp_path / "scores.parquet").to_pylist()
    assert [(r["example_id"], r["step_index"]) for r in back[:2]] == [("e0", 0), ("e0", 1)]
    assert all(0.0 <= r["score"] <= 1.0 for r in back)
