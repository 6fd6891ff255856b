"""``tracemill eval processbench``: first-error F1 of a verifier on the four ProcessBench subsets.

A verifier turns each (problem, steps) row into a predicted earliest wrong step (-1: none). Every verifier's
predictions are written as a predictions file — JSONL, one ``{"id", "subset", "predicted"}`` per row — and
scored by ``score_predictions``, so a file made elsewhere (e.g. MC labels of the same solutions) is scored the
same way. Verifiers (``--verifier``):

- ``arith``: the arithmetic claim checker (``verifier.arith_claims.first_error_by_claims``);
- ``prm:PATH``: a saved PRM; the first step scoring below a threshold is the error. As ProcessBench's
  authors do, the threshold is the one with the best F1 on the GSM8K subset, then applied to all subsets;
- ``mc``: a predictions file given with ``predictions`` (MC labeling of the given solutions);
- ``consensus``: that MC file combined with ``arith`` under a disagreement policy (``verifier.consensus``).

Scores count only rows present in the predictions (``coverage`` says how many of the subset); a null
prediction counts as wrong.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pipelines.evaluate.scores import first_error_scores
from verifier.arith_claims import first_error_by_claims
from verifier.consensus import combine_first_errors

SUBSETS = ("gsm8k", "math", "olympiadbench", "omnimath")
THRESHOLD_SUBSET = "gsm8k"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "processbench"  # beside a checkout
THRESHOLDS = tuple(i / 20 for i in range(1, 20))  # PRM thresholds tried on GSM8K: 0.05 .. 0.95


@dataclass(frozen=True)
class EvalOptions:
    data_dir: Path = DEFAULT_DATA
    predictions: Path | None = None  # mc / consensus: the MC predictions file
    policy: str = "strict"  # consensus: disagreement policy (keep | flag | drop | strict)
    limit: int = 0  # rows per subset, a seeded sample (0 = all)
    seed: int = 0


Rows = dict[str, list[dict]]  # subset -> ProcessBench rows
Predictor = Callable[[str, Rows, EvalOptions], list[dict]]  # (argument after ':', rows, options) -> predictions


def load_subsets(data_dir: Path, limit: int = 0, seed: int = 0) -> Rows:
    out = {}
    for subset in SUBSETS:
        rows = json.loads((data_dir / f"{subset}.json").read_text(encoding="utf-8"))
        out[subset] = random.Random(seed).sample(rows, limit) if 0 < limit < len(rows) else rows
    return out


def _pred(subset: str, row: dict, predicted: int | None) -> dict:
    return {"id": row["id"], "subset": subset, "predicted": predicted}


def read_predictions(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_predictions(path: Path, preds: Sequence[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(p) + "\n" for p in preds), encoding="utf-8")
    return path


# ---------------------------------------------------------------- verifiers


def predict_arith(arg: str, rows: Rows, opts: EvalOptions) -> list[dict]:
    return [_pred(s, r, first_error_by_claims(r["steps"])) for s, rs in rows.items() for r in rs]


def predict_mc(arg: str, rows: Rows, opts: EvalOptions) -> list[dict]:
    if opts.predictions is None:
        raise ValueError("--verifier mc needs a predictions file (JSONL {id, subset, predicted})")
    wanted = {r["id"] for rs in rows.values() for r in rs}
    return [p for p in read_predictions(opts.predictions) if p["id"] in wanted]


def predict_consensus(arg: str, rows: Rows, opts: EvalOptions) -> list[dict]:
    mc = {p["id"]: p["predicted"] for p in predict_mc(arg, rows, opts)}
    return [_pred(s, r, combine_first_errors(mc[r["id"]], {"arith": first_error_by_claims(r["steps"])},
                                             len(r["steps"]), opts.policy))
            for s, rs in rows.items() for r in rs if r["id"] in mc]


def first_below(scores: Sequence[float], threshold: float) -> int:
    """Index of the first step scoring below ``threshold`` (NaN: not scored, skipped); -1 if none."""
    return next((i for i, s in enumerate(scores) if not math.isnan(s) and s < threshold), -1)


def choose_threshold(scores: Sequence[Sequence[float]], labels: Sequence[int]) -> float:
    """The threshold in ``THRESHOLDS`` with the best first-error F1 (the lowest on ties)."""
    def f1(t: float) -> float:
        value = first_error_scores([first_below(s, t) for s in scores], labels)[2]
        return -1.0 if math.isnan(value) else value
    return max(THRESHOLDS, key=f1)


def predict_prm(arg: str, rows: Rows, opts: EvalOptions) -> list[dict]:
    from verifier.prm import ProcessRewardModel  # torch + transformers load only for this verifier

    model = ProcessRewardModel.load(arg)
    scores = {s: model.score_batch([(r["problem"], r["steps"]) for r in rs]) for s, rs in rows.items()}
    threshold = choose_threshold(scores[THRESHOLD_SUBSET], [r["label"] for r in rows[THRESHOLD_SUBSET]])
    return [{**_pred(s, r, first_below(sc, threshold)), "threshold": threshold, "scores": sc}
            for s, rs in rows.items() for r, sc in zip(rs, scores[s], strict=True)]


VERIFIERS: dict[str, Predictor] = {"arith": predict_arith, "mc": predict_mc, "consensus": predict_consensus,
                                   "prm": predict_prm}


# ---------------------------------------------------------------- scoring and the job


def score_predictions(pred_file: Path, data_dir: Path = DEFAULT_DATA) -> list[dict]:
    """Per-subset ``{subset, n, coverage, acc_erroneous, acc_error_free, f1}`` plus an ``average`` row."""
    by_id = {p["id"]: p["predicted"] for p in read_predictions(pred_file)}
    table = []
    for subset, rows in load_subsets(data_dir).items():
        scored = [r for r in rows if r["id"] in by_id]
        a, b, f1 = first_error_scores([by_id[r["id"]] for r in scored], [r["label"] for r in scored])
        table.append({"subset": subset, "n": len(scored), "coverage": len(scored) / len(rows),
                      "acc_erroneous": a, "acc_error_free": b, "f1": f1})
    present = [t for t in table if t["n"]]
    table.append({"subset": "average", "n": sum(t["n"] for t in present),
                  "coverage": sum(t["coverage"] for t in table) / len(SUBSETS),
                  **{k: sum(t[k] for t in present) / len(present) if present else math.nan
                     for k in ("acc_erroneous", "acc_error_free", "f1")}})
    return table


def render(table: list[dict], title: str) -> Table:
    out = Table(title=title)
    for col in ("subset", "n", "coverage", "acc_erroneous", "acc_error_free", "f1"):
        out.add_column(col, justify="left" if col == "subset" else "right")
    for row in table:
        out.add_row(row["subset"], str(row["n"]), *(f"{row[k]:.3f}" for k in
                                                     ("coverage", "acc_erroneous", "acc_error_free", "f1")))
    return out


def eval_processbench(verifier: str, out_dir: Path, opts: EvalOptions | None = None,
                      console: Console | None = None) -> list[dict]:
    """Run ``verifier`` (``arith``, ``mc``, ``consensus`` or ``prm:PATH``), write ``predictions.jsonl`` and
    ``results.json`` into ``out_dir``, print a table, and return the scores."""
    opts = opts or EvalOptions()
    name, _, arg = verifier.partition(":")
    if name not in VERIFIERS:
        raise ValueError(f"unknown verifier {verifier!r}; known: {sorted(VERIFIERS)} (prm as prm:PATH)")
    preds = VERIFIERS[name](arg, load_subsets(opts.data_dir, opts.limit, opts.seed), opts)
    pred_file = write_predictions(out_dir / "predictions.jsonl", preds)
    table = score_predictions(pred_file, opts.data_dir)
    extra = {"threshold": preds[0]["threshold"]} if preds and "threshold" in preds[0] else {}
    result = {"verifier": verifier, "limit": opts.limit, "seed": opts.seed, **extra, "scores": table}
    (out_dir / "results.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    (console or Console()).print(render(table, f"ProcessBench first-error F1 — {verifier}"))
    return table


def predictions_from_run(root: Path, run_id: str, out: Path) -> Path:
    """MC predictions of a ``tracemill label --solutions`` run over ProcessBench rows, in the file format above.

    Each given solution's labeled first error becomes the prediction for its ProcessBench row id.
    """
    from storage.catalog import Catalog

    with Catalog(root) as cat:
        rows = cat.sql("SELECT json_extract_string(p.meta_json, '$.id') AS id, s.first_error AS predicted "
                       "FROM solutions s JOIN problems p USING (run_id, problem_id)", run_id=run_id).to_pylist()
    preds = [{"id": r["id"], "subset": r["id"].rsplit("-", 1)[0], "predicted": r["predicted"]}
             for r in rows if r["id"]]
    if not preds:
        raise ValueError(f"run {run_id!r} has no labeled ProcessBench solutions under {root}")
    return write_predictions(out, preds)
