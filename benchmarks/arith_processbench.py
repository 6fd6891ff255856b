"""The arithmetic-claim checker as a process verifier on ProcessBench (earliest-error labels).

Step status is only partly known from a ProcessBench label L: steps before L are correct, step L is wrong,
steps after L are unknown (often wrong by propagation, sometimes fine). So "a wrong claim => the step is
wrong" is scored on known steps only: precision = flagged & (index == L) / flagged & (index <= L), and
recall = erroneous steps (index == L) that are flagged. First-error F1 (ProcessBench's metric) uses
``first_error_by_claims`` alone as the predictor: harmonic mean of accuracy on samples with an error
(predicted index == L) and on error-free samples (predicted -1).

    PYTHONPATH=. python -m benchmarks.arith_processbench [--data-dir DIR] [--subsets gsm8k math]
        [--out results.json] [--show-false-alarms 5]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from verifier.arith_claims import check_solution

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "processbench"  # beside a checkout
SUBSETS = ("gsm8k", "math", "olympiadbench", "omnimath")


@dataclass
class SubsetResult:
    subset: str
    samples: int = 0
    steps: int = 0
    steps_with_claims: int = 0
    claims: int = 0
    wrong_claims: int = 0
    flagged_known_correct: int = 0  # flagged steps before the label (false alarms)
    flagged_known_error: int = 0  # flagged steps at the label (hits)
    error_steps: int = 0  # samples with label >= 0
    error_samples_exact: int = 0  # predicted first error == label
    clean_samples: int = 0
    clean_samples_exact: int = 0  # predicted -1 on label == -1
    seconds: float = 0.0

    @property
    def precision(self) -> float:
        flagged = self.flagged_known_correct + self.flagged_known_error
        return self.flagged_known_error / flagged if flagged else float("nan")

    @property
    def recall(self) -> float:
        return self.flagged_known_error / self.error_steps if self.error_steps else float("nan")

    @property
    def acc_error(self) -> float:
        return self.error_samples_exact / self.error_steps if self.error_steps else float("nan")

    @property
    def acc_correct(self) -> float:
        return self.clean_samples_exact / self.clean_samples if self.clean_samples else float("nan")

    @property
    def f1(self) -> float:
        a, b = self.acc_error, self.acc_correct
        return 2 * a * b / (a + b) if a + b > 0 else 0.0

    def summary(self) -> dict[str, float | int | str]:
        derived = {k: round(getattr(self, k), 4) for k in ("precision", "recall", "acc_error", "acc_correct", "f1")}
        return {**asdict(self), **derived}


def score_subset(subset: str, rows: list[dict], show: int) -> SubsetResult:
    """Run the checker over every solution of one subset and tally step- and sample-level scores."""
    result = SubsetResult(subset)
    shown = 0
    start = time.perf_counter()
    for row in rows:
        label, checks = row["label"], check_solution(row["steps"])
        result.samples += 1
        result.steps += len(checks)
        predicted = next((i for i, c in enumerate(checks) if c.has_error), -1)
        for index, check in enumerate(checks):
            result.steps_with_claims += check.found > 0
            result.claims += check.found
            result.wrong_claims += len(check.wrong)
            known_correct = label == -1 or index < label
            if check.has_error and known_correct:
                result.flagged_known_correct += 1
                if shown < show:
                    shown += 1
                    print(f"  false alarm {row['id']} step {index}: {[str(c) for c in check.wrong]}")
            result.flagged_known_error += check.has_error and index == label
        if label >= 0:
            result.error_steps += 1
            result.error_samples_exact += predicted == label
        else:
            result.clean_samples += 1
            result.clean_samples_exact += predicted == -1
    result.seconds = time.perf_counter() - start
    return result


def print_table(results: list[SubsetResult]) -> None:
    header = (f"{'subset':<14}{'samples':>8}{'steps':>7}{'w/claims':>10}{'claims':>8}{'wrong':>7}"
              f"{'prec':>7}{'recall':>8}{'acc_err':>9}{'acc_ok':>8}{'F1':>7}{'steps/s':>9}")
    print(header)
    for r in results:
        share = r.steps_with_claims / r.steps if r.steps else 0.0
        print(f"{r.subset:<14}{r.samples:>8}{r.steps:>7}{r.steps_with_claims:>5} {share:>4.0%}{r.claims:>8}"
              f"{r.wrong_claims:>7}{r.precision:>7.3f}{r.recall:>8.3f}{r.acc_error:>9.3f}{r.acc_correct:>8.3f}"
              f"{r.f1:>7.3f}{r.steps / max(r.seconds, 1e-9):>9.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--subsets", nargs="+", default=list(SUBSETS), choices=SUBSETS)
    parser.add_argument("--out", type=Path, default=None, help="write the per-subset results as JSON here")
    parser.add_argument("--show-false-alarms", type=int, default=0, help="print this many false alarms per subset")
    args = parser.parse_args()

    results = []
    for subset in args.subsets:
        rows = json.loads((args.data_dir / f"{subset}.json").read_text())
        results.append(score_subset(subset, rows, args.show_false_alarms))
    print_table(results)
    if args.out:
        args.out.write_text(json.dumps([r.summary() for r in results], indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
