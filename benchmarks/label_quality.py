"""Label quality vs labeling cost of every strategy, on simulated solutions whose first errors are known.

Samples solutions to arith problems of 1-11 operations (2-12 steps with the answer step) from the sim
engine, labels them with each strategy and decision rule at several budgets, and scores predictions against
``cluster.problems.arith.first_error``. One invocation runs every recovery rate of ``--recovery-rates`` (default: the
sim's 5% and 20%), each without and with the arithmetic-claim checker, and prints per row the F1, its
difference to linear k=4 (Math-Shepherd's best setting here) and the rollout ratio to it; ``goal`` marks
rows with F1 >= linear k=4's + 0.15 at <= 25% of its rollouts. Writes F1 vs rollouts/solution (no checker,
one panel per recovery rate) to ``benchmarks/results/label_quality.png``.

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

from cluster.problems.arith import first_error, parse_step  # noqa: E402
from cluster.problems.loaders import load_arith  # noqa: E402
from cluster.problems.problem import Problem  # noqa: E402
from cluster.sim_engine import SimConfig, SimEngine  # noqa: E402
from pipelines.evaluate.scores import LabelQuality, evaluate  # noqa: E402
from search.labeling import STRATEGIES, LabelResult, make_config  # noqa: E402
from search.program import Program, run_programs  # noqa: E402
from search.sampling import SampledSolutions, SamplingConfig, build_prompt, sample_solutions  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "label_quality.png"
MIX = {n_ops: 1.0 for n_ops in range(1, 12)}  # 1-11 operations: 2-12 steps with the answer step
ROLLOUT = {"max_new_tokens": 400, "temperature": 0.8}  # the sim writes ~15 words per step
BASELINE = "linear k=4"  # Math-Shepherd's best k on this benchmark; every table compares with it unchecked
GOAL_F1, GOAL_RATIO = 0.15, 0.25  # the goal: F1 at least this much above the baseline, at most this share of its rollouts
RECOVERY_RATES = (0.05, 0.2)  # the sim's default recovery rate, and a harder one (more lucky successes)
CHECKERS = ("none", "arith")
# the soft rule of the rows below: bad below half the previous value, or below 0.25; sequential test at 95%
DROP = {"rule": "drop", "drop": 0.5, "threshold": 0.25, "level": 0.95}
BEST = {"search": "binary", "max_per_step": 6, **DROP}  # configs/sim.toml's labeling options

# (row name, strategy, options); the checker option is added per table
RUNS: list[tuple[str, str, dict]] = [
    *[(f"linear k={k}", "linear", {"k": k}) for k in (1, 2, 4, 8)],
    ("linear k=8 threshold=0.25", "linear", {"k": 8, "rule": "threshold", "threshold": 0.25}),
    ("linear k=8 drop", "linear", {"k": 8, **DROP}),
    *[(f"binary k={k}", "binary", {"k": k}) for k in (2, 4)],
    ("binary k=4 drop", "binary", {"k": 4, **DROP}),
    ("binary k=4 override", "binary", {"k": 4, "override_failed": True}),
    *[(f"adaptive+binary cap={c}", "adaptive", {"search": "binary", "max_per_step": c}) for c in (4, 8)],
    ("adaptive+binary cap=8 override", "adaptive", {"search": "binary", "max_per_step": 8, "override_failed": True}),
    ("adaptive+binary cap=6 drop", "adaptive", BEST),
    ("adaptive+binary cap=6 drop no-trust", "adaptive", {**BEST, "trust_answer": False}),
    # the best rollout-only point within 25% of linear k=4's rollouts found by a 221-config sweep
    ("adaptive+binary cap=12 b=3 drop", "adaptive", {"search": "binary", "max_per_step": 12, "batch": 3,
                                                     "level": 0.8, "rule": "drop", "drop": 0.5, "threshold": 0.35}),
    ("adaptive+linear cap=8", "adaptive", {"search": "linear", "max_per_step": 8}),
    ("adaptive+linear cap=8 drop", "adaptive", {"search": "linear", "max_per_step": 8, **DROP}),
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


def run_table(problems: list[Problem], sampling: SamplingConfig, engine: SimEngine, checker: str,
              base: LabelQuality) -> dict[str, LabelQuality]:
    """Every row of ``RUNS`` with the given checker; prints the table against ``base`` (plain linear k=4)."""
    recovery_rate = engine.config.recovery_rate
    print(f"\n## recovery rate {recovery_rate}, checker {checker}")
    print(f"{'strategy':36} {'F1':>6} {'dF1':>6} {'roll%':>6} {'acc_err':>7} {'acc_ok':>6} {'cover':>6} "
          f"{'step_acc':>8} {'roll/sol':>8} {'tok/sol':>8} {'s':>5} goal")
    results: dict[str, LabelQuality] = {}
    seconds: dict[str, float] = {}
    for name, strategy, options in RUNS:
        start = time.perf_counter()
        results[name] = run_one(problems, engine, sampling, strategy, {**options, "checker": checker})
        seconds[name] = time.perf_counter() - start
    for name, q in results.items():
        diff, ratio = q.f1 - base.f1, q.rollouts_per_solution / base.rollouts_per_solution
        goal = "yes" if diff >= GOAL_F1 and ratio <= GOAL_RATIO else ""
        print(f"{name:36} {q.f1:6.3f} {diff:+6.3f} {ratio:6.1%} {q.acc_erroneous:7.3f} {q.acc_error_free:6.3f} "
              f"{q.coverage:6.3f} {q.step_accuracy:8.3f} {q.rollouts_per_solution:8.2f} "
              f"{q.tokens_per_solution:8.0f} {seconds[name]:5.1f} {goal}", flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=500)
    ap.add_argument("--solutions", type=int, default=4, help="per problem")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--error-rate", type=float, default=0.06, help="per step, arithmetic and logic each")
    ap.add_argument("--recovery-rates", type=float, nargs="+", default=list(RECOVERY_RATES),
                    help="per step once off track: a compensating slip lands back on the true value")
    ap.add_argument("--checkers", nargs="+", default=list(CHECKERS), choices=CHECKERS)
    args = ap.parse_args()
    problems = load_arith(args.problems, args.seed, MIX)
    sampling = SamplingConfig(n_solutions=args.solutions, max_new_tokens=400, seed=args.seed)
    print(f"{args.problems * args.solutions} solutions; error rate per step {args.error_rate} (x2 kinds); "
          f"dF1 and roll% against {BASELINE}; goal: dF1 >= {GOAL_F1} at roll% <= {GOAL_RATIO:.0%}")
    curves = {}
    baseline = next(options for name, _, options in RUNS if name == BASELINE)
    for recovery in args.recovery_rates:
        engine = SimEngine(SimConfig(arith_error_rate=args.error_rate, logic_error_rate=args.error_rate,
                                     recovery_rate=recovery))
        base = run_one(problems, engine, sampling, "linear", baseline)  # Math-Shepherd: no checker
        for checker in args.checkers:
            results = run_table(problems, sampling, engine, checker, base)
            if checker == args.checkers[0]:
                curves[recovery] = results
    plot(curves, args.checkers[0])


def plot(curves: dict[float, dict[str, LabelQuality]], checker: str) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(curves), figsize=(7 * len(curves), 5), squeeze=False)
    for ax, (recovery, results) in zip(axes[0], curves.items(), strict=True):
        for family in ("linear", "binary", "adaptive+binary", "adaptive+linear", "mcts"):
            pts = [(q.rollouts_per_solution, q.f1, n) for n, q in results.items() if n.split(" ")[0] == family]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o", label=family)
            for x, y, n in pts:
                ax.annotate(n.split(" ", 1)[1], (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("rollouts per solution")
        ax.set_ylabel("first-error F1")
        ax.set_title(f"sim, recovery rate {recovery}, checker {checker}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT, dpi=120)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
