"""Dataset filters: exact and near duplicates, decontamination against eval sets, per-problem caps.

Every filter takes an Arrow table and returns the kept rows plus the dropped ones as ``FILTERED`` rows with
their reason, so nothing disappears silently and ``SELECT filter, count(*) FROM filtered`` explains a
dataset's size. Filters run in table order and keep the first of a group, so callers sort first (e.g.
shortest trace first) to decide which duplicate survives.

Near duplicates: MinHash over word n-grams taken inside each step (n-grams never straddle a step boundary),
with LSH bands to find candidate pairs and the exact Jaccard similarity of the n-gram sets to confirm them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from cluster.problems.steps import split_steps
from storage.schemas import FILTERED

_WORD = re.compile(r"\w+")
_PRIME = (1 << 31) - 1  # hash values and multipliers stay below 2**31, so a*x + b fits in 64 bits


@dataclass(frozen=True)
class FilterConfig:
    id_col: str = "trace_id"
    text_col: str = "text"
    problem_col: str = "problem_id"
    prompt_col: str | None = None  # also checked for contamination (e.g. "prompt"); the question text
    steps: tuple[str, ...] = ("exact_dup", "near_dup", "contamination", "per_problem_cap")  # FILTERS, in order
    ngram: int = 3  # words per shingle for near-duplicate detection
    num_perm: int = 128  # MinHash permutations
    bands: int = 32  # LSH bands (num_perm / bands rows each); more bands find lower similarities
    threshold: float = 0.8  # Jaccard at or above which two rows are near duplicates
    contamination_n: int = 13  # words per n-gram shared with an eval set that marks a row contaminated
    eval_texts: dict[str, list[str]] = field(default_factory=dict)  # eval set name -> texts
    per_problem_cap: int = 4  # rows kept per problem
    delimiter: str = "\n\n"
    seed: int = 0  # MinHash permutation parameters

    def __post_init__(self) -> None:
        unknown = [s for s in self.steps if s not in FILTERS]
        if unknown:
            raise ValueError(f"unknown filters {unknown}; known: {sorted(FILTERS)}")
        if self.num_perm % self.bands:
            raise ValueError("num_perm must be a multiple of bands")
        if not 0 < self.threshold <= 1 or min(self.ngram, self.contamination_n, self.per_problem_cap) < 1:
            raise ValueError("threshold must be in (0, 1]; ngram sizes and caps at least 1")


@dataclass
class FilterResult:
    kept: pa.Table
    filtered: pa.Table  # FILTERED rows


Drop = tuple[int, str, str]  # (row index, reason, kept id)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _h64(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")


def shingles(text: str, n: int, delimiter: str) -> set[str]:
    """Word n-grams inside each step; a step shorter than ``n`` words is one shingle."""
    out: set[str] = set()
    for step in split_steps(text, delimiter):
        w = words(step)
        out.update(" ".join(w[i:i + n]) for i in range(max(1, len(w) - n + 1)) if w)
    return out


def minhash(shingle_set: set[str], num_perm: int, seed: int) -> np.ndarray:
    """MinHash signature with universal hashing (a*x + b) mod p, p the Mersenne prime 2**31 - 1."""
    if not shingle_set:
        return np.full(num_perm, _PRIME, dtype=np.uint64)
    rng = np.random.default_rng(seed)
    a = rng.integers(1, _PRIME, num_perm, dtype=np.uint64)
    b = rng.integers(0, _PRIME, num_perm, dtype=np.uint64)
    x = np.array([_h64(s) % _PRIME for s in shingle_set], dtype=np.uint64)
    return ((a[:, None] * x[None, :] + b[:, None]) % np.uint64(_PRIME)).min(axis=1)


def _exact_dup(table: pa.Table, cfg: FilterConfig) -> list[Drop]:
    seen: dict[str, str] = {}
    drops = []
    for i, (rid, text) in enumerate(zip(table.column(cfg.id_col).to_pylist(),
                                        table.column(cfg.text_col).to_pylist(), strict=True)):
        key = " ".join(text.split())
        if key in seen:
            drops.append((i, f"same text as {seen[key]}", seen[key]))
        else:
            seen[key] = rid
    return drops


def _near_dup(table: pa.Table, cfg: FilterConfig) -> list[Drop]:
    ids = table.column(cfg.id_col).to_pylist()
    sets = [shingles(t, cfg.ngram, cfg.delimiter) for t in table.column(cfg.text_col).to_pylist()]
    rows = cfg.num_perm // cfg.bands
    buckets: dict[tuple[int, bytes], list[int]] = {}
    drops, dropped = [], set()
    for i, s in enumerate(sets):
        sig = minhash(s, cfg.num_perm, cfg.seed)
        candidates = set()
        for band in range(cfg.bands):
            key = (band, sig[band * rows:(band + 1) * rows].tobytes())
            candidates.update(buckets.get(key, ()))
            buckets.setdefault(key, []).append(i)
        best = max(((len(s & sets[j]) / len(s | sets[j]) if s | sets[j] else 1.0, -j) for j in candidates
                    if j not in dropped), default=None)
        if best is not None and best[0] >= cfg.threshold:
            j = -best[1]
            drops.append((i, f"near duplicate of {ids[j]} (jaccard {best[0]:.2f})", ids[j]))
            dropped.add(i)
    return drops


def _contamination(table: pa.Table, cfg: FilterConfig) -> list[Drop]:
    n = cfg.contamination_n
    index: dict[tuple[str, ...], str] = {}
    for name, texts in cfg.eval_texts.items():
        for text in texts:
            w = words(text)
            for i in range(len(w) - n + 1):
                index.setdefault(tuple(w[i:i + n]), name)
    if not index:
        return []
    cols = [cfg.text_col] + ([cfg.prompt_col] if cfg.prompt_col else [])
    drops = []
    for i, row in enumerate(table.select(cols).to_pylist()):
        for col in cols:
            w = words(row[col] or "")
            hit = next((tuple(w[k:k + n]) for k in range(len(w) - n + 1) if tuple(w[k:k + n]) in index), None)
            if hit:
                drops.append((i, f"{n}-gram overlap with {index[hit]} in {col}: '{' '.join(hit)}'", ""))
                break
    return drops


def _per_problem_cap(table: pa.Table, cfg: FilterConfig) -> list[Drop]:
    counts: dict[str, int] = {}
    drops = []
    for i, pid in enumerate(table.column(cfg.problem_col).to_pylist()):
        counts[pid] = counts.get(pid, 0) + 1
        if counts[pid] > cfg.per_problem_cap:
            drops.append((i, f"problem already has {cfg.per_problem_cap} rows", ""))
    return drops


FILTERS: dict[str, Callable[[pa.Table, FilterConfig], list[Drop]]] = {
    "exact_dup": _exact_dup,
    "near_dup": _near_dup,
    "contamination": _contamination,
    "per_problem_cap": _per_problem_cap,
}


def apply_filters(table: pa.Table, cfg: FilterConfig, table_name: str, run_id: str) -> FilterResult:
    """Run ``cfg.steps`` in order; each sees only the rows the previous ones kept."""
    filtered: list[dict] = []
    for name in cfg.steps:
        drops = FILTERS[name](table, cfg)
        if not drops:
            continue
        ids, pids, rows = (table.column(cfg.id_col).to_pylist(), table.column(cfg.problem_col).to_pylist(),
                           table.to_pylist())
        filtered += [{"run_id": run_id, "table_name": table_name, "row_id": ids[i], "problem_id": pids[i],
                      "filter": name, "reason": reason, "kept_id": kept,
                      "row_json": json.dumps(rows[i], default=str)} for i, reason, kept in drops]
        mask = np.ones(table.num_rows, dtype=bool)
        mask[[i for i, _, _ in drops]] = False
        table = table.filter(pa.array(mask))
    return FilterResult(table, pa.Table.from_pylist(filtered, schema=FILTERED))


def load_eval_texts(paths: Iterable[Path], fields: tuple[str, ...] = ("question", "problem")) -> list[str]:
    """Question texts of eval files (``.jsonl`` or ``.json`` lists, or folders of them) for decontamination."""
    texts: list[str] = []
    for path in map(Path, paths):
        files = sorted(p for p in path.rglob("*") if p.suffix in {".json", ".jsonl"}) if path.is_dir() else [path]
        for f in files:
            raw = f.read_text(encoding="utf-8")
            records = [json.loads(line) for line in raw.splitlines() if line.strip()] if f.suffix == ".jsonl" \
                else json.loads(raw)
            for rec in records if isinstance(records, list) else [records]:
                texts += [rec[k] for k in fields if isinstance(rec, dict) and isinstance(rec.get(k), str)]
    return texts
