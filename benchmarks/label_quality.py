"""Label quality vs labeling cost of every strategy, on simulated solutions whose first errors are known.

Samples solutions to arith problems of 1-11 operations (2-12 steps with the answer step) from the sim
engine, labels them with each strategy at several budgets, and scores predictions against
``cluster.arith.first_error``. Prints a table and the rollout ratio of adaptive+binary to linear k=8, and
writes F1 vs rollouts/solution to ``benchmarks/out/label_quality.png``.

    PYTHONPATH=. python benchmarks/label_quality.py --problems 500
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cluster.arith import first_error, parse_step  # noqa: E402
from cluster.sim_engine import SimConfig, SimEngine  # noqa: E402
from search.eval_labels import LabelQuality, evaluate  # noqa: E402
from search.labeling import STRATEGIES, LabelResult, make_config  # noqa: E402
from search.loaders import load_arith  # noqa: E402
from search.problems import Problem  # noqa: E402
from search.program import Program, run_programs  # noqa: E402
from search.sampling import SampledSolutions, SamplingConfig, build_prompt, sample_solutions  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "label_quality.png"
MIX = {n_ops: 1.0 for n_ops in range(1, 12)}  # 1-11 operations: 2-12 steps with the answer step
ROLLOUT = {"max_new_tokens": 400, "temperature": 0.8}  # the sim writes ~15 words per step
BASELINE = "linear k=8"

# (row name, strategy, options); adaptive+binary rows are the ones the goal ratio is taken from
RUNS: list[tuple[str, str, dict]] = [
    *[(f"linear k={k}", "linear", {"k": k}) for k in (1, 2, 4, 8)],
    *[(f"binary k={k}", "binary", {"k": k}) for k in (2, 4, 8)],
    *[(f"adaptive+binary b={b} cap={c}", "adaptive", {"search": "binary", "batch": b, "max_per_step": c})
      for b, c in ((1, 4), (1, 8), (2, 8), (1, 16))],
    ("adaptive+linear b=1 cap=8", "adaptive", {"search": "linear", "batch": 1, "max_per_step": 8}),
    *[(f"mcts k={k} budget={n}", "mcts", {"k": k, "rollout_budget": n, "search_limit": n})
      for k, n in ((4, 40), (8, 120))],
]


@dataclass
class _Verdict:
    answer: str | None
    correct: bool


def arith_judge(text: str, gold: str) -> _Verdict:
    """The sim's final step reads "The answer is N."; anything else has no answer."""
    steps = [s for s in text.split("\n\n") if s.strip()]
    value = parse_step(steps[-1]) if steps else None
    answer = str(value) if isinstance(value, int) else None
    return _Verdict(answer, answer == gold)


def _pipeline(problem: Problem, prompt: str, sampling: SamplingConfig, strategy: str,
              cfg: object) -> Program[tuple[SampledSolutions, LabelResult]]:
    sampled = yield from sample_solutions(problem, prompt, sampling, arith_judge)
    paths = [s.path for s in sampled.solutions]
    result = yield from STRATEGIES[strategy].label(sampled.tree, paths, problem, prompt, cfg, arith_judge)
    return sampled, result


def run_one(problems: list[Problem], engine: SimEngine, sampling: SamplingConfig, strategy: str,
            options: dict) -> LabelQuality:
    cfg = make_config(strategy, {**options, "rollout": ROLLOUT})
    prompts = {p.problem_id: build_prompt(engine.apply_chat_template, p, sampling) for p in problems}
    programs = {p.problem_id: _pipeline(p, prompts[p.problem_id], sampling, strategy, cfg) for p in problems}
    done = run_programs(programs, engine.generate)
    predicted, true, steps, rollouts, tokens = [], [], [], 0, 0
    for p in problems:
        sampled, result = done[p.problem_id]
        rollouts, tokens = rollouts + result.n_rollouts, tokens + result.rollout_tokens
        for sol, err in zip(sampled.solutions, result.first_errors, strict=True):
            predicted.append(err)
            true.append(first_error(p.question, sol.text))
            steps.append([result.labels[n.node_id].hard if n.node_id in result.labels else None
                          for n in sol.path])
    return evaluate(predicted, true, steps, rollouts, tokens)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=500)
    ap.add_argument("--solutions", type=int, default=4, help="per problem")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--error-rate", type=float, default=0.06, help="per step, arithmetic and logic each")
    ap.add_argument("--recovery-rate", type=float, default=0.05,
                    help="per step once off track: a compensating slip lands back on the true value")
    args = ap.parse_args()
    problems = load_arith(args.problems, args.seed, MIX)
    engine = SimEngine(SimConfig(arith_error_rate=args.error_rate, logic_error_rate=args.error_rate,
                                 recovery_rate=args.recovery_rate))
    sampling = SamplingConfig(n_solutions=args.solutions, max_new_tokens=400, seed=args.seed)
    results: dict[str, LabelQuality] = {}
    print(f"{'strategy':32} {'F1':>6} {'acc_err':>7} {'acc_ok':>6} {'cover':>6} {'step_acc':>8} "
          f"{'roll/sol':>8} {'tok/sol':>8} {'s':>5}")
    for name, strategy, options in RUNS:
        start = time.perf_counter()
        q = results[name] = run_one(problems, engine, sampling, strategy, options)
        print(f"{name:32} {q.f1:6.3f} {q.acc_erroneous:7.3f} {q.acc_error_free:6.3f} {q.coverage:6.3f} "
              f"{q.step_accuracy:8.3f} {q.rollouts_per_solution:8.2f} {q.tokens_per_solution:8.0f} "
              f"{time.perf_counter() - start:5.1f}", flush=True)
    any_q = next(iter(results.values()))
    print(f"\n{any_q.n_solutions} solutions; error rate per step {args.error_rate} (x2 kinds)")
    base = results[BASELINE]
    for name, q in results.items():
        if name.startswith("adaptive+binary"):
            print(f"{name}: F1 {q.f1:.3f} vs {base.f1:.3f} ({BASELINE}) with "
                  f"{q.rollouts_per_solution / base.rollouts_per_solution:.1%} of its rollouts")
    plot(results)


def plot(results: dict[str, LabelQuality]) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 5))
    for family in ("linear", "binary", "adaptive+binary", "adaptive+linear", "mcts"):
        pts = [(q.rollouts_per_solution, q.f1, n) for n, q in results.items() if n.split(" ")[0] == family]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=family)
        for x, y, n in pts:
            ax.annotate(n.split(" ", 1)[1], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("rollouts per solution")
    ax.set_ylabel("first-error F1")
    ax.set_title("Label quality vs cost (sim engine, known first errors)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT, dpi=120)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
