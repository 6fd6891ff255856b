"""Reject rows: every input or output that was dropped is kept, with where it came from and why.

A loader or a stage collects rejects with ``Rejects.add`` and hands ``rejects.rows`` to the shard it commits
(``{"rejects": rejects.drain(), ...}``), so rejects are committed exactly once with the rows they belong to;
or writes them on their own with ``ShardWriter.write_rows("rejects", name, rows)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

REJECT_ROW_BYTES = 4096  # raw row text kept per reject (UTF-8 bytes); enough to debug, small enough to store
TRUNCATION_MARK = "…[truncated]"


def reject_row(stage: str, source: str, row: object, reason: str, *, limit: int = REJECT_ROW_BYTES) -> dict:
    """One ``rejects`` row; ``row`` is kept as text (JSON for non-strings), cut to ``limit`` UTF-8 bytes.

    >>> reject_row("load", "gsm8k.jsonl:12", {"q": "?"}, "no gold answer")["row"]
    '{"q": "?"}'
    """
    text = row if isinstance(row, str) else json.dumps(row, sort_keys=True, default=str, ensure_ascii=False)
    return {"stage": stage, "source": source, "row": _truncate(text, limit), "reason": reason}


@dataclass
class Rejects:
    """Rejects of one stage, collected until the shard they belong to is committed."""

    stage: str  # load | generate | label | mine ...
    limit: int = REJECT_ROW_BYTES
    rows: list[dict] = field(default_factory=list)

    def add(self, source: str, row: object, reason: str) -> None:
        self.rows.append(reject_row(self.stage, source, row, reason, limit=self.limit))

    def drain(self) -> list[dict]:
        """Return the collected rows and start afresh (call when the shard carrying them is committed)."""
        rows, self.rows = self.rows, []
        return rows


def _truncate(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    keep = max(limit - len(TRUNCATION_MARK.encode()), 0)
    return data[:keep].decode(errors="ignore") + TRUNCATION_MARK
