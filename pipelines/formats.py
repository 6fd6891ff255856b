"""Dataset rows in the formats trainers read: TRL stepwise PRM, Math-Shepherd tagged, SFT messages.

The stored tables (``prm_dataset``, ``sft_dataset``) keep everything (hard and soft labels, messages and
prompt/completion); the ``to_*`` functions pick the columns one trainer expects, so an export never needs a
second pass over the trees.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from cluster.engine import request_key
from search.traces import Labels, Solution
from storage.schemas import PRM_DATASET, SFT_DATASET


@dataclass(frozen=True)
class PrmConfig:
    truncate_after_error: bool = False  # drop steps after the first bad one (its label is the last)
    strip_delimiter: bool = True  # TRL's PRMTrainer joins completions with its own step separator
    delimiter: str = "\n\n"


@dataclass(frozen=True)
class SftConfig:
    user_template: str = "{question}"  # the user turn; fields: question
    system: str = ""  # optional system message, left out when empty
    strip_trailing: bool = True  # drop the trailing step delimiter of the last step

    def __post_init__(self) -> None:
        if "{question}" not in self.user_template:
            raise ValueError("user_template must contain {question}")


def _strip(step: str, cfg: PrmConfig) -> str:
    return step.removesuffix(cfg.delimiter).rstrip() if cfg.strip_delimiter else step


def prm_row(sol: Solution, labels: Labels, question: str, cfg: PrmConfig, run_id: str) -> dict | None:
    """One solution as a stepwise PRM example; None when a step has no label (nothing to train on)."""
    step_labels = [labels.get(nid) for nid in sol.node_ids]
    if not step_labels or any(label is None for label in step_labels):
        return None
    hard = [label.hard for label in step_labels]
    soft = [float(label.soft if label.soft is not None else label.hard) for label in step_labels]
    first_error = hard.index(False) if False in hard else -1
    keep = first_error + 1 if cfg.truncate_after_error and first_error >= 0 else len(hard)
    return {
        "run_id": run_id, "example_id": request_key("prm", sol.solution_id, keep), "problem_id": sol.problem_id,
        "source_id": sol.solution_id, "prompt": question,
        "completions": [_strip(s, cfg) for s in sol.steps[:keep]], "labels": hard[:keep],
        "soft_labels": soft[:keep], "first_error": first_error, "truncated": keep < len(hard),
    }


def prm_table(solutions: list[Solution], labels: Labels, questions: dict[str, str], cfg: PrmConfig,
              run_id: str) -> pa.Table:
    """``prm_dataset`` rows for every fully labeled solution whose problem has a question."""
    rows = [row for sol in solutions if sol.problem_id in questions
            and (row := prm_row(sol, labels, questions[sol.problem_id], cfg, run_id)) is not None]
    return pa.Table.from_pylist(rows, schema=PRM_DATASET)


def to_trl_prm(table: pa.Table, label_kind: str = "hard") -> list[dict]:
    """TRL stepwise-supervision rows ``{prompt, completions, labels}``; soft labels are the MC values."""
    column = {"hard": "labels", "soft": "soft_labels"}[label_kind]
    return [{"prompt": r["prompt"], "completions": r["completions"], "labels": r[column]}
            for r in table.select(["prompt", "completions", column]).to_pylist()]


def to_math_shepherd(table: pa.Table, tag: str = " ки", good: str = "+", bad: str = "-") -> list[dict]:
    """Math-Shepherd tagged rows: ``input`` has ``tag`` after every step, ``label`` has +/- in its place."""
    out = []
    for r in table.select(["prompt", "completions", "labels"]).to_pylist():
        steps = [f"Step {i + 1}: {s}" for i, s in enumerate(r["completions"])]
        marks = [tag.replace(tag.strip(), good if ok else bad) for ok in r["labels"]]
        out.append({"input": r["prompt"] + "\n" + "\n".join(s + tag for s in steps),
                    "label": r["prompt"] + "\n" + "\n".join(s + m for s, m in zip(steps, marks, strict=True))})
    return out


def sft_table(traces: pa.Table, questions: dict[str, str], cfg: SftConfig, run_id: str) -> pa.Table:
    """``sft_dataset`` rows, one per trace, with both the message and the prompt/completion forms."""
    rows = []
    for t in traces.select(["trace_id", "problem_id", "kind", "text"]).to_pylist():
        if t["problem_id"] not in questions:
            continue
        user = cfg.user_template.format(question=questions[t["problem_id"]])
        completion = t["text"].rstrip() if cfg.strip_trailing else t["text"]
        system = [{"role": "system", "content": cfg.system}] if cfg.system else []
        rows.append({
            "run_id": run_id, "example_id": request_key("sft", t["trace_id"]), "problem_id": t["problem_id"],
            "trace_id": t["trace_id"], "kind": t["kind"], "prompt": user, "completion": completion,
            "messages": [*system, {"role": "user", "content": user},
                         {"role": "assistant", "content": completion}],
        })
    return pa.Table.from_pylist(rows, schema=SFT_DATASET)


def _sft_messages(table: pa.Table) -> list[dict]:
    return [{"messages": m} for m in table.column("messages").to_pylist()]


def _sft_prompt_completion(table: pa.Table) -> list[dict]:
    return table.select(["prompt", "completion"]).to_pylist()


SFT_STYLES: dict[str, Callable[[pa.Table], list[dict]]] = {
    "messages": _sft_messages,  # TRL conversational language modeling
    "prompt-completion": _sft_prompt_completion,  # TRL standard prompt-completion
}


def to_trl_sft(table: pa.Table, style: str = "messages") -> list[dict]:
    if style not in SFT_STYLES:
        raise ValueError(f"unknown SFT style {style!r}; known: {sorted(SFT_STYLES)}")
    return SFT_STYLES[style](table)
