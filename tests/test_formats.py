"""PRM and SFT dataset rows, trainer formats, and files that ``datasets`` loads unchanged."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from search.traces.formats import (
    PrmConfig,
    SftConfig,
    prm_table,
    sft_table,
    to_math_shepherd,
    to_trl_prm,
    to_trl_sft,
)
from search.traces.miners import MineConfig, mine, solutions_from_tree
from storage.schemas import TRACES
from tests.traces_fixtures import S1, S2, S3, W1, W2, W2B, bad, marble_tree, terminal

QUESTION = "Tom has 3 bags of 16 marbles and gives away a third. How many does he keep?"


def _wrong_solution_tree():
    tree, labels, named = marble_tree()
    w3 = tree.add_child(named["w2"], "So he keeps 48 - 14 = 34. The answer is 34.\n\n", 12)
    terminal(w3, "34", False)
    labels[w3.node_id] = bad()
    return tree, labels


def _prm(cfg: PrmConfig, labels_edit=None) -> pa.Table:
    tree, labels = _wrong_solution_tree()
    if labels_edit:
        labels_edit(tree, labels)
    sols = sorted(solutions_from_tree(tree), key=lambda s: s.n_tokens)
    return prm_table(sols, labels, {tree.problem_id: QUESTION}, cfg, "r1").rows


WRONG = (S1.strip(), W2.strip())


def test_prm_rows_cut_after_the_first_error_by_default():
    rows = {tuple(r["completions"]): r for r in _prm(PrmConfig()).to_pylist()}
    wrong = rows[WRONG]
    assert wrong["labels"] == [True, False] and wrong["first_error"] == 1 and wrong["truncated"]
    assert wrong["soft_labels"] == [0.75, 0.0] and wrong["masked"] == 0
    right = rows[(S1.strip(), S2.strip(), S3.strip())]
    assert right["labels"] == [True] * 3 and right["first_error"] == -1 and not right["truncated"]


def test_prm_mask_keeps_later_steps_as_unlabeled_context():
    rows = _prm(PrmConfig(after_error="mask")).to_pylist()
    wrong = next(r for r in rows if r["first_error"] == 1)
    assert wrong["completions"] == [*WRONG, "So he keeps 48 - 14 = 34. The answer is 34."]
    assert wrong["labels"] == [True, False, None] and wrong["soft_labels"] == [0.75, 0.0, None]
    assert wrong["masked"] == 1 and not wrong["truncated"]


def test_a_solution_whose_later_steps_are_unlabeled_keeps_its_negative():
    """Binary search labels a wrong solution only up to the error it found: that row is a negative, not lost."""
    def unlabel_after_error(tree, labels):
        for node in tree.nodes.values():
            if node.text.startswith("So he keeps 48 - 14"):
                del labels[node.node_id]

    rows = _prm(PrmConfig(), unlabel_after_error).to_pylist()
    assert [r["labels"] for r in rows if r["first_error"] >= 0] == [[True, False]]


def test_a_solution_with_an_unlabeled_step_before_any_error_is_filtered_with_its_reason():
    tree, labels = _wrong_solution_tree()
    s1 = tree.nodes[tree.root.children[0]]
    del labels[s1.node_id]
    sols = solutions_from_tree(tree)
    through_s1 = {s.solution_id for s in sols if s.node_ids[0] == s1.node_id}
    out = prm_table(sols, labels, {tree.problem_id: QUESTION}, PrmConfig(), "r1")
    assert len(through_s1) == 2 and out.rows.num_rows == len(sols) - 2
    assert set(out.filtered.column("row_id").to_pylist()) == through_s1
    assert all("undetermined" in r for r in out.filtered.column("reason").to_pylist())


def test_duplicate_samples_give_one_prm_row_and_a_filtered_duplicate():
    tree, labels = _wrong_solution_tree()
    sols = solutions_from_tree(tree)
    out = prm_table(sols + sols[:1], labels, {tree.problem_id: QUESTION}, PrmConfig(), "r1")
    ids = out.rows.column("example_id").to_pylist()
    assert len(ids) == len(set(ids)) == len(sols)
    assert out.filtered.column("filter").to_pylist() == ["exact_dup"]


def test_trl_prm_hard_and_soft_and_math_shepherd_tags():
    table = _prm(PrmConfig(after_error="mask"))
    hard = to_trl_prm(table, "hard")
    soft = to_trl_prm(table, "soft")
    assert {"prompt", "completions", "labels", "soft_labels", "problem_id"} <= set(hard[0])
    assert all(isinstance(x, bool) for r in hard for x in r["labels"] if x is not None)
    assert all(isinstance(x, float) for r in soft for x in r["labels"] if x is not None)
    tagged = to_math_shepherd(table.filter(pc.equal(table["first_error"], 1)))[0]
    assert tagged["input"].count(" ки") == 2  # the masked third step carries no tag
    assert "48 marbles. +\n" in tagged["label"] and "= 14. -\n" in tagged["label"]
    assert tagged["label"].endswith("The answer is 34.") and "ки" not in tagged["label"]
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
    assert to_trl_sft(table, "prompt-completion")[0]["completion"] == row["completion"]
    conv = to_trl_sft(table, "conversational")[0]
    assert [m["role"] for m in conv["prompt"]] == ["system", "user"]
    assert conv["completion"] == [{"role": "assistant", "content": row["completion"]}]
    with pytest.raises(ValueError):
        SftConfig(user_template="no slot")


def test_recovery_style_moves_the_wrong_step_out_of_the_loss():
    table = sft_table(_traces(), {"p-marbles": QUESTION}, SftConfig(), "r1")
    back = next(r for r in table.to_pylist() if r["kind"] == "backtrack")
    start, end = back["wrong_char_starts"][0], back["wrong_char_ends"][0]
    wrong_text = back["completion"][start:end]
    assert wrong_text in (W1, W2, W2B)
    row = next(r for r in to_trl_sft(table, "recovery") if r["kind"] == "backtrack")
    assert row["prompt"][-1]["role"] == "assistant" and row["prompt"][-1]["content"].endswith(wrong_text)
    assert wrong_text not in row["completion"][0]["content"]
    assert row["prompt"][-1]["content"] + row["completion"][0]["content"] == back["completion"]
    plain = next(r for r in to_trl_sft(table, "recovery") if r["kind"] == "shortest")
    assert plain["prompt"][-1]["role"] == "user"  # nothing to mask: same as conversational


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
