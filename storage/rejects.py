"""Reject rows: every input or output that was dropped is kept, with where it came from and why.

The one builder of a ``rejects`` row, used by the loaders (bad rows, duplicates), the search workers (failed
generations, filtered problems) and guided search; the rows travel in the shard they belong to, so they are
committed exactly once with it. Every field is made storable: a lone surrogate from a broken input file is
spelled ``\\udxxx`` (it would fail Parquet's UTF-8 check and lose the row), the raw row is cut to
``REJECT_ROW_BYTES``.
"""

from __future__ import annotations

import json

REJECT_ROW_BYTES = 4096  # raw row text kept per reject (UTF-8 bytes); enough to debug, small enough to store
TRUNCATION_MARK = "…[truncated]"


def reject_row(stage: str, source: str, row: object, reason: str, *, limit: int = REJECT_ROW_BYTES) -> dict:
    """One ``rejects`` row; ``row`` is kept as text (JSON for non-strings), cut to ``limit`` UTF-8 bytes.

    >>> reject_row("load", "gsm8k.jsonl:12", {"q": "?"}, "no gold answer")["row"]
    '{"q": "?"}'
    """
    text = row if isinstance(row, str) else json.dumps(row, sort_keys=True, default=str, ensure_ascii=False)
    return {"stage": stage, "source": printable(source), "row": _truncate(printable(text), limit),
            "reason": printable(reason)}


def printable(text: str) -> str:
    """``text`` as valid UTF-8 (lone surrogates spelled ``\\udxxx``), so a reject row can always be stored."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _truncate(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    keep = max(limit - len(TRUNCATION_MARK.encode()), 0)
    return data[:keep].decode(errors="ignore") + TRUNCATION_MARK
