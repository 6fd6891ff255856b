"""Dataset rows in the formats trainers read: stepwise PRM, Math-Shepherd tagged, SFT, GRPO.

The stored tables (``prm_dataset``, ``sft_dataset``) keep everything (hard and soft labels, masked steps,
messages and plain text, where the wrong steps of a backtrack trace are); the ``to_*`` functions pick the
columns one trainer expects, so an export never needs a second pass over the trees.

PRM rows keep their negatives. A solution whose first error is labeled yields its steps up to and including
that error (label False there); the steps after it are cut, or kept as context with a null label
(``after_error="mask"``), never labeled from a search that did not decide them. A solution that yields no
row (an unlabeled step before any error, a duplicate of another solution) gets a ``filtered`` row saying why.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from cluster.engine import request_key
from cluster.problems.steps import DEFAULT_DELIMITER
from search.tools import tool_turns
from search.traces.miners import Labels, Solution
from storage.schemas import FILTERED, PRM_DATASET, SFT_DATASET

AFTER_ERROR = ("cut", "mask")


@dataclass(frozen=True)
class PrmConfig:
    after_error: str = "cut"  # steps after the first error: "cut" (dropped) or "mask" (kept, label null)
    strip_delimiter: bool = True  # trainers join completions with their own step separator
    delimiter: str = DEFAULT_DELIMITER  # the run's step delimiter (sampling.delimiter)

    def __post_init__(self) -> None:
        if self.after_error not in AFTER_ERROR:
            raise ValueError(f"after_error must be one of {AFTER_ERROR}, got {self.after_error!r}")


@dataclass(frozen=True)
class SftConfig:
    user_template: str = "{question}"  # the user turn; fields: question
    system: str = ""  # optional system message, left out when empty
    strip_trailing: bool = True  # drop the trailing step delimiter of the last step
    tools: bool = False  # the run ran code (tools.python): completions become assistant/tool turns

    def __post_init__(self) -> None:
        if "{question}" not in self.user_template:
            raise ValueError("user_template must contain {question}")

    def completion_messages(self, text: str) -> list[dict]:
        """The assistant's turns: one message, or with tools the code/``tool`` output turns of ``tool_turns``."""
        return tool_turns(text) if self.tools else [{"role": "assistant", "content": text}]

    def prompt_messages(self, question: str) -> list[dict]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return [*system, {"role": "user", "content": self.user_template.format(question=question)}]


@dataclass(frozen=True)
class PrmRows:
    """``prm_dataset`` rows and the ``filtered`` rows of the solutions that yielded none."""

    rows: pa.Table
    filtered: pa.Table


def _strip(step: str, cfg: PrmConfig) -> str:
    return step.removesuffix(cfg.delimiter).rstrip() if cfg.strip_delimiter else step


def prm_row(sol: Solution, labels: Labels, question: str, cfg: PrmConfig, run_id: str) -> dict | str:
    """One solution as a stepwise PRM example, or the reason it yields none.

    The first error is the first step labeled bad; every step before it must be labeled (good), else the
    error's position is not known and the solution is dropped with that reason.
    """
    step_labels = [labels.get(nid) for nid in sol.node_ids]
    if not step_labels:
        return "no steps"
    first_error = -1
    for i, label in enumerate(step_labels):
        if label is None:
            return f"step {i} unlabeled before any labeled error: first error undetermined"
        if not label.hard:
            first_error = i
            break
    decided = len(step_labels) if first_error < 0 else first_error + 1
    keep = len(step_labels) if cfg.after_error == "mask" else decided
    hard: list[bool | None] = [lab.hard for lab in step_labels[:decided]] + [None] * (keep - decided)
    soft = [lab.soft for lab in step_labels[:decided]] + [None] * (keep - decided)
    return {
        "run_id": run_id, "example_id": request_key("prm", sol.solution_id), "problem_id": sol.problem_id,
        "source_id": sol.solution_id, "prompt": question,
        "completions": [_strip(s, cfg) for s in sol.steps[:keep]], "labels": hard, "soft_labels": soft,
        "first_error": first_error, "truncated": keep < len(step_labels), "masked": keep - decided,
    }


def filtered_row(run_id: str, table: str, row_id: str, problem_id: str, kind: str, reason: str,
                 kept_id: str | None = None, row: dict | None = None) -> dict:
    return {"run_id": run_id, "table_name": table, "row_id": row_id, "problem_id": problem_id, "filter": kind,
            "reason": reason, "kept_id": kept_id, "row_json": json.dumps(row, default=str) if row else None}


def prm_table(solutions: list[Solution], labels: Labels, questions: dict[str, str], cfg: PrmConfig,
              run_id: str) -> PrmRows:
    """``prm_dataset`` rows, one per distinct solution with a decided first error (or none); the rest filtered.

    Two samples with the same text are one solution (same leaf node): the second is ``exact_dup``.
    """
    rows, dropped, seen = [], [], set()
    for sol in solutions:
        sid, pid = sol.solution_id, sol.problem_id
        if pid not in questions:
            dropped.append(filtered_row(run_id, "prm_dataset", sid, pid, "no_question", "problem row missing"))
            continue
        if sid in seen:
            dropped.append(filtered_row(run_id, "prm_dataset", sid, pid, "exact_dup",
                                        "same steps as another sample of this problem", kept_id=sid))
            continue
        seen.add(sid)
        out = prm_row(sol, labels, questions[pid], cfg, run_id)
        if isinstance(out, str):
            dropped.append(filtered_row(run_id, "prm_dataset", sid, pid, "undetermined", out))
        else:
            rows.append(out)
    return PrmRows(pa.Table.from_pylist(rows, schema=PRM_DATASET), pa.Table.from_pylist(dropped, schema=FILTERED))


def to_trl_prm(table: pa.Table, label_kind: str = "hard") -> list[dict]:
    """Stepwise-supervision rows ``{prompt, completions, labels}`` (+ ids, soft labels and split).

    ``labels`` holds hard labels (``label_kind="hard"``) or the MC values (``"soft"``); a null entry is a
    masked step. ``soft_labels`` is always there for tracemill's trainer.
    """
    if label_kind not in ("hard", "soft"):
        raise ValueError(f"label_kind must be hard or soft, got {label_kind!r}")
    keep = ["example_id", "problem_id", "prompt", "completions", "labels", "soft_labels", "first_error"]
    rows = table.select(keep + (["split"] if "split" in table.column_names else [])).to_pylist()
    if label_kind == "soft":
        for r in rows:
            r["labels"] = r["soft_labels"]
    return rows


def to_math_shepherd(table: pa.Table, tag: str = " ки", good: str = "+", bad: str = "-") -> list[dict]:
    """Math-Shepherd tagged rows: ``input`` has ``tag`` after every labeled step, ``label`` +/- in its place.

    Masked steps (null label) carry no tag: they are context, not supervision.
    """
    out = []
    split = ["split"] if "split" in table.column_names else []
    for r in table.select(["example_id", "problem_id", "prompt", "completions", "labels", *split]).to_pylist():
        steps = [f"Step {i + 1}: {s}" for i, s in enumerate(r["completions"])]
        tags = ["" if ok is None else tag for ok in r["labels"]]
        marks = ["" if ok is None else tag.replace(tag.strip(), good if ok else bad) for ok in r["labels"]]
        out.append({"example_id": r["example_id"], "problem_id": r["problem_id"],
                    "input": r["prompt"] + "\n" + "\n".join(s + t for s, t in zip(steps, tags, strict=True)),
                    "label": r["prompt"] + "\n" + "\n".join(s + m for s, m in zip(steps, marks, strict=True)),
                    **{k: r[k] for k in split}})
    return out


def sft_table(traces: pa.Table, questions: dict[str, str], cfg: SftConfig, run_id: str) -> pa.Table:
    """``sft_dataset`` rows, one per trace: plain and conversational forms, and the wrong steps' spans.

    With ``cfg.tools`` the conversational forms keep each code call as its own turns: the assistant message
    ends with the ```python block and a ``{"role": "tool"}`` message holds its output (``search.tools``);
    ``completion`` stays the plain text with the output blocks inline, which the spans index.
    """
    rows = []
    columns = ["trace_id", "problem_id", "kind", "text", "wrong_char_starts", "wrong_char_ends"]
    for t in traces.select(columns).to_pylist():
        if t["problem_id"] not in questions:
            continue
        prompt = cfg.prompt_messages(questions[t["problem_id"]])
        completion = t["text"].rstrip() if cfg.strip_trailing else t["text"]
        answer = cfg.completion_messages(completion)
        rows.append({
            "run_id": run_id, "example_id": request_key("sft", t["trace_id"]), "problem_id": t["problem_id"],
            "trace_id": t["trace_id"], "kind": t["kind"], "prompt": prompt[-1]["content"], "completion": completion,
            "messages": [*prompt, *answer], "prompt_messages": prompt, "completion_messages": answer,
            "wrong_char_starts": t["wrong_char_starts"] or [],
            "wrong_char_ends": [min(e, len(completion)) for e in t["wrong_char_ends"] or []],
        })
    return pa.Table.from_pylist(rows, schema=SFT_DATASET)


def _sft_messages(r: dict) -> dict:
    """Conversational language modeling: the loss covers every turn, system and user included."""
    return {"messages": r["messages"]}


def _sft_prompt_completion(r: dict) -> dict:
    return {"prompt": r["prompt"], "completion": r["completion"]}


def _sft_conversational(r: dict) -> dict:
    """Conversational prompt-completion: trainers apply the chat template and train on the completion only."""
    return {"prompt": r["prompt_messages"], "completion": r["completion_messages"]}


def _sft_recovery(r: dict) -> dict:
    """As conversational, with everything up to the last wrong step moved into the prompt.

    The prompt ends in an assistant message (TRL continues it instead of opening a new turn), so the wrong
    steps are read but never trained on: the model learns to notice and recover, not to make the error.
    Traces without a wrong step are the same as ``conversational``. With tool turns (more than one
    completion message) both sides are cut into turns the same way (a cut never falls inside a call: it
    ends a step, and a step keeps its code and output together).
    """
    if not r["wrong_char_ends"]:
        return _sft_conversational(r)
    cut = max(r["wrong_char_ends"])
    if len(r["completion_messages"]) > 1:
        text = r["completion"]
        return {"prompt": [*r["prompt_messages"], *tool_turns(text[:cut])], "completion": tool_turns(text[cut:])}
    text = r["completion_messages"][0]["content"]
    return {"prompt": [*r["prompt_messages"], {"role": "assistant", "content": text[:cut]}],
            "completion": [{"role": "assistant", "content": text[cut:]}]}


SFT_STYLES: dict[str, Callable[[dict], dict]] = {
    "conversational": _sft_conversational,  # TRL conversational prompt-completion (completion-only loss)
    "recovery": _sft_recovery,  # conversational, wrong steps of backtrack traces masked from the loss
    "messages": _sft_messages,  # TRL conversational language modeling
    "prompt-completion": _sft_prompt_completion,  # TRL standard prompt-completion (plain strings)
}


def to_trl_sft(table: pa.Table, style: str = "conversational") -> list[dict]:
    if style not in SFT_STYLES:
        raise ValueError(f"unknown SFT style {style!r}; known: {sorted(SFT_STYLES)}")
    ids = ["example_id", "problem_id", "kind"] + (["split"] if "split" in table.column_names else [])
    return [{**{k: r[k] for k in ids}, **SFT_STYLES[style](r)} for r in table.to_pylist()]


def to_grpo(problems: pa.Table, cfg: SftConfig) -> list[dict]:
    """GRPO rows: a conversational ``prompt`` and the gold ``answer`` the reward functions read."""
    cols = ["problem_id", "question", "gold_answer"] + (["split"] if "split" in problems.column_names else [])
    return [{"example_id": request_key("grpo", r["problem_id"]), "problem_id": r["problem_id"],
             "prompt": cfg.prompt_messages(r["question"]), "answer": r["gold_answer"],
             **({"split": r["split"]} if "split" in r else {})}
            for r in problems.select(cols).to_pylist()]
