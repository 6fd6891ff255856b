"""Calls per second of ``run_python("print(1)")``: the bubblewrap sandbox against the audit-hook one it replaced.

Tool steps call the sandbox once per code block, thousands of times a run, so its start-up cost matters. The
old sandbox is loaded from git history (``OLD_COMMIT``, the last commit before the rewrite), so both run side
by side in one process, interleaved round by round so machine load hits them alike; a bare
``python -I -S -c "print(1)"`` subprocess is the floor both pay.

Run: ``PYTHONPATH=. python benchmarks/sandbox.py [--calls 100] [--rounds 5]``. Prints calls/s for each and
the ratios new/old and new/bare.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

from verifier.sandbox import run_python

OLD_COMMIT = "3f092d6"  # verifier/sandbox.py with the audit hook
ROOT = Path(__file__).resolve().parents[1]


def _old_run_python() -> Callable[..., object]:
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{OLD_COMMIT}:verifier/sandbox.py"],
                            check=True, capture_output=True, text=True).stdout
    module = types.ModuleType("old_sandbox")
    sys.modules["old_sandbox"] = module  # dataclasses look the module up by name
    exec(compile(source, "old_sandbox.py", "exec"), module.__dict__)
    return module.run_python


def _bare() -> object:
    return subprocess.run([sys.executable, "-I", "-S", "-c", "print(1)"], capture_output=True, check=True)


def _calls_per_s(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return calls / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100, help="calls per round and variant")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    old = _old_run_python()
    assert run_python("print(1)").stdout == "1\n" and old("print(1)").stdout == "1\n"
    variants: dict[str, Callable[[], object]] = {
        "new (bubblewrap)": lambda: run_python("print(1)"),
        "old (audit hook)": lambda: old("print(1)"),
        "bare interpreter": _bare,
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            rates[name].append(_calls_per_s(fn, args.calls))
    best = {name: max(r) for name, r in rates.items()}  # the least disturbed round of each
    for name, rate in best.items():
        print(f"{name}: {rate:7.1f} calls/s  ({1000 / rate:5.1f} ms/call; rounds: "
              + ", ".join(f"{r:.1f}" for r in rates[name]) + ")")
    print(f"ratio new/old: {best['new (bubblewrap)'] / best['old (audit hook)']:.2f}")
    print(f"ratio new/bare: {best['new (bubblewrap)'] / best['bare interpreter']:.2f}")


if __name__ == "__main__":
    main()
