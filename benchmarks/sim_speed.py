"""Steps per second of the sim engine on one core: whole solutions, and one-step continuations of prefixes.

Run: ``PYTHONPATH=. python benchmarks/sim_speed.py [--problems 200] [--n 8]``. Prints steps/s for each mode
and the ratio of the two, measured side by side in one run (the target is >= 10,000 steps/s).
"""

from __future__ import annotations

import argparse
import time

from cluster.engine import GenRequest
from cluster.problems.arith import generate
from cluster.problems.steps import step_texts
from cluster.sim_engine import SimConfig, SimEngine

MIX = {k: 1.0 for k in range(2, 13)}  # the labeling benchmark's 2-12 step problems


def _steps_per_s(engine: SimEngine, requests: list[GenRequest], delimiter: str) -> tuple[float, int]:
    start = time.perf_counter()
    results = engine.generate(requests)
    elapsed = time.perf_counter() - start
    steps = sum(len(step_texts(s.text, delimiter)) for r in results for s in r.samples)
    return steps / elapsed, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=200)
    parser.add_argument("--n", type=int, default=8, help="samples per request")
    args = parser.parse_args()
    cfg = SimConfig(arith_error_rate=0.1, logic_error_rate=0.05)
    engine = SimEngine(cfg)
    prompts = [engine.apply_chat_template([{"role": "user", "content": s.question}])
               for s in generate(args.problems, seed=0, mix=MIX)]
    full = [GenRequest(f"f{i}", p, n=args.n, max_new_tokens=1000, seed=i) for i, p in enumerate(prompts)]
    engine.generate(full[:2])  # warm the prompt cache, as a long run would be
    full_rate, full_steps = _steps_per_s(engine, full, cfg.delimiter)

    solutions = [r.samples[0].text for r in engine.generate(full)]
    halves = [step_texts(text, cfg.delimiter) for text in solutions]
    prefixes = [cfg.delimiter.join(steps[:len(steps) // 2]) + cfg.delimiter for steps in halves]
    cont = [GenRequest(f"c{i}", p, prefix, n=args.n, max_new_tokens=1000, stop=(cfg.delimiter,), seed=i)
            for i, (p, prefix) in enumerate(zip(prompts, prefixes, strict=True))]
    cont_rate, cont_steps = _steps_per_s(engine, cont, cfg.delimiter)

    print(f"whole solutions : {full_rate:10,.0f} steps/s ({full_steps} steps)")
    print(f"one-step rollout: {cont_rate:10,.0f} steps/s ({cont_steps} steps, prefix parsed each time)")
    print(f"ratio continuation/whole: {cont_rate / full_rate:.2f}")


if __name__ == "__main__":
    main()
