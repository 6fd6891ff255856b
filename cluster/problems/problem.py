"""Problems with gold answers: the input of every run."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Problem:
    problem_id: str
    question: str
    gold_answer: str
    source: str
    meta: dict = field(default_factory=dict, hash=False, compare=False)

    @staticmethod
    def make(question: str, gold_answer: str, source: str, meta: dict | None = None) -> Problem:
        return Problem(problem_id(source, question), question, str(gold_answer), source, meta or {})

    def meta_json(self) -> str:
        return json.dumps(self.meta, sort_keys=True, default=str)


def problem_id(source: str, question: str) -> str:
    """Stable id: the same question from the same source always gets the same id, across runs and machines."""
    return hashlib.sha256(f"{source}\x1f{question.strip()}".encode()).hexdigest()[:16]
