"""PRM and SFT dataset rows, trainer formats, and files that ``datasets`` loads unchanged."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipelines.export import export_tables
from pipelines.formats import (
    PrmConfig,
    SftConfig,
    prm_table,
    sft_table,
    to_math_shepherd,
    to_trl_prm,
    to_trl_sft,
)
from search.traces import MineConfig, mine, solutions_from_tree
from storage.schemas import TRACES
from tests.traces_fixtures import S1, S2, S3, W2, bad, marble_tree, terminal

QUESTION = "Tom has 3 bags of 16 marbles and gives away a third. How many does he keep?"


def _wrong_solution_tree():
    tree, labels, named = marble_tree()
    w3 = tree.add_child(named["w2"], "So he keeps 48 - 14 = 34. The answer is 34.\n\n", 12)
    terminal(w3, "34", False)
    labels[w3.node_id] = bad()
    return tree, labels


def _prm(cfg: PrmConfig) -> pa.Table:
    tree, labels = _wrong_solution_tree()
    sols = sorted(solutions_from_tree(tree), key=lambda s: s.n_tokens)
    return prm_table(sols, labels, {tree.problem_id: QUESTION}, cfg, "r1")


def test_prm_rows_have_one_label_per_step_and_first_error():
    rows = {tuple(r["completions"]): r for r in _prm(PrmConfig()).to_pylist()}
    wrong = rows[(S1.strip(), W2.strip(), "So he keeps 48 - 14 = 34. The answer is 34.")]
    assert wrong["labels"] == [True, False, False] and wrong["first_error"] == 1 and not wrong["truncated"]
    assert wrong["soft_labels"] == [0.75, 0.0, 0.0]
    right = rows[(S1.strip(), S2.strip(), S3.strip())]
    assert right["labels"] == [True] * 3 and right["first_error"] == -1


def test_prm_truncation_keeps_steps_up_to_the_first_error():
    rows = _prm(PrmConfig(truncate_after_error=True)).to_pylist()
    wrong = next(r for r in rows if r["first_error"] == 1)
    assert wrong["completions"] == [S1.strip(), W2.strip()] and wrong["labels"] == [True, False]
    assert wrong["truncated"]


def test_trl_prm_hard_and_soft_and_math_shepherd_tags():
    table = _prm(PrmConfig())
    hard = to_trl_prm(table, "hard")
    soft = to_trl_prm(table, "soft")
    assert set(hard[0]) == {"prompt", "completions", "labels"}
    assert all(isinstance(x, bool) for r in hard for x in r["labels"])
    assert all(isinstance(x, float) for r in soft for x in r["labels"])
    tagged = to_math_shepherd(table.filter(pc.equal(table["first_error"], 1)))[0]
    assert tagged["input"].count(" ки") == 3
    assert tagged["label"].endswith(" -") and " +\n" in tagged["label"] and "ки" not in tagged["label"]
    assert tagged["input"].replace(" ки", " +", 1).replace(" ки", " -") == tagged["label"]


def _traces() -> pa.Table:
    tree, labels, _ = marble_tree()
    traces = mine([tree], labels, "backtrack", MineConfig()) + mine([tree], labels, "shortest")
    return pa.Table.from_pylist([t.row("r1") for t in traces], schema=TRACES)


def test_sft_rows_carry_messages_and_prompt_completion():
    cfg = SftConfig(user_template="Solve step by step.\n\n{question}", system="You are careful.")
    table = sft_table(_traces(), {"p-marbles": QUESTION}, cfg, "r1")
    assert table.num_rows == 2
    row = table.to_pylist()[0]
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    assert row["messages"][1]["content"] == row["prompt"] and QUESTION in row["prompt"]
    assert row["messages"][2]["content"] == row["completion"] and not row["completion"].endswith("\n")
    assert to_trl_sft(table, "prompt-completion")[0] == {"prompt": row["prompt"], "completion": row["completion"]}
    with pytest.raises(ValueError):
        SftConfig(user_template="no slot")


def test_sft_messages_render_through_a_chat_template():
    from tests.tiny_model import build_tokenizer

    tok = build_tokenizer()
    table = sft_table(_traces(), {"p-marbles": QUESTION}, SftConfig(), "r1")
    for row in to_trl_sft(table, "messages"):
        text = tok.apply_chat_template(row["messages"], tokenize=False)
        assert text.startswith("<|im_start|>user\n" + QUESTION + "<|im_end|>\n<|im_start|>assistant\n")
        assert row["messages"][1]["content"] in text
        ids = tok.apply_chat_template(row["messages"], tokenize=True, return_dict=False)
        assert tok.decode(ids) == text


def test_exported_files_load_with_datasets(tmp_path):
    from datasets import load_dataset

    prm = _prm(PrmConfig())
    sft = sft_table(_traces(), {"p-marbles": QUESTION}, SftConfig(), "r1")
    tables = {"prm_dataset": prm, "sft_dataset": sft, "traces": _traces()}
    [prm_file, ms_file] = export_tables("trl-prm", tmp_path, tables, label_kind="soft", math_shepherd=True)
    [sft_file] = export_tables("trl-sft", tmp_path, tables)
    jsonl = export_tables("jsonl", tmp_path / "j", {"traces": tables["traces"]})
    ds = load_dataset("parquet", data_files=str(prm_file), split="train")
    assert ds.column_names == ["prompt", "completions", "labels"] and len(ds) == prm.num_rows
    assert isinstance(ds[0]["labels"][0], float)
    sft_ds = load_dataset("parquet", data_files=str(sft_file), split="train")
    assert sft_ds[0]["messages"][0]["role"] == "user"
    assert len(load_dataset("json", data_files=str(ms_file), split="train")) == prm.num_rows
    tr = load_dataset("json", data_files=str(jsonl[0]), split="train")
    assert sorted(tr["kind"]) == ["backtrack", "shortest"]
    stored = tmp_path / "traces.parquet"
    pq.write_table(tables["traces"], stored)
    assert load_dataset("parquet", data_files=str(stored), split="train")[0]["segments"]
