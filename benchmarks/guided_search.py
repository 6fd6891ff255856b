"""Accuracy against budget N of every guided-search strategy, on the simulator or (``--real``) SmolLM2.

The simulator writes arith solutions with known error rates and exact truth, so runs are fast and every
strategy sees the same policy. ``--real`` runs quickstart-style arith problems (one worked example before
the question) through SmolLM2-135M-Instruct on CPU: keep it small (default 8 problems, N up to 8).
Each (scorer, strategy, N) cell is one ``run_programs`` over all problems, so requests batch across them.
Prints a table and writes ``benchmarks/out/guided_search.png`` (``guided_search_real.png`` with ``--real``;
one panel per scorer).

    PYTHONPATH=. python -m benchmarks.guided_search --problems 200
    PYTHONPATH=. python -m benchmarks.guided_search --real --problems 8 --budgets 1 2 4 8 --scorers tool
"""

from __future__ import annotations

import argparse
import time
from dataclasses import fields
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from cluster.problems.loaders import load_arith  # noqa: E402
from cluster.sim_engine import SimConfig, SimEngine  # noqa: E402
from search.guided import STRATEGIES, make_config, make_scorer  # noqa: E402
from search.program import run_programs  # noqa: E402
from search.sampling import SamplingConfig, build_prompt  # noqa: E402
from verifier.answers import judge  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent / "out"
SIM = SimConfig(arith_error_rate=0.1, logic_error_rate=0.1)  # ~20% per step: single samples often fail
SIM_MIX = {3: 0.4, 4: 0.3, 5: 0.3}  # 4-6 steps with the answer step
REAL_MIX = {1: 0.5, 2: 0.5}  # the quickstart mix: the 135M model solves some of these
MC_OPTIONS = {"k": 4, "rollout": {"max_new_tokens": 400, "temperature": 0.8}}
REAL_TOKENS = {"max_new_tokens": 160, "step_max_new_tokens": 64, "max_steps": 6, "temperature": 0.7}


def scorer_for(name: str):
    return make_scorer(name, MC_OPTIONS if name == "mc" else {}, **({"judge": judge} if name == "mc" else {}))


def run_cell(engine, problems, prompts, strategy: str, scorer, n: int, extra: dict) -> tuple[float, float]:
    own = {f.name for f in fields(STRATEGIES[strategy].config)}  # each strategy takes only its own keys
    cfg = make_config(strategy, {"n": n, **{k: v for k, v in extra.items() if k in own}})
    programs = {p.problem_id: STRATEGIES[strategy].run(p, prompts[p.problem_id], cfg, scorer, judge) for p in problems}
    start = time.perf_counter()
    results = run_programs(programs, engine.generate)
    return sum(r.correct for r in results.values()) / len(results), time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", action="store_true", help="SmolLM2-135M on CPU instead of the simulator")
    ap.add_argument("--problems", type=int, default=None, help="default: 200 sim, 8 real")
    ap.add_argument("--budgets", type=int, nargs="+", default=None, help="default: 1 2 4 8 16 sim, 1 2 4 8 real")
    ap.add_argument("--scorers", nargs="+", default=None, help="default: mc tool arith_truth (sim), tool (real)")
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    if args.real:
        from cluster.problems.few_shot import few_shot_examples
        from cluster.transformers_config import TransformersConfig
        from cluster.transformers_engine import TransformersEngine

        engine, extra = TransformersEngine(TransformersConfig("smollm2-135m-instruct")), REAL_TOKENS
        scfg = SamplingConfig(few_shot=few_shot_examples(1, "\n\n"))
        problems = load_arith(args.problems or 8, args.seed, REAL_MIX)
    else:
        engine, extra, scfg = SimEngine(SIM), {}, SamplingConfig()
        problems = load_arith(args.problems or 200, args.seed, SIM_MIX)
    budgets = args.budgets or ([1, 2, 4, 8] if args.real else [1, 2, 4, 8, 16])
    scorers = args.scorers or (["tool"] if args.real else ["mc", "tool", "arith_truth"])
    prompts = {p.problem_id: build_prompt(engine.apply_chat_template, p, scfg) for p in problems}

    table = Table(title=f"guided search accuracy, {'SmolLM2-135M' if args.real else 'sim'}, "
                        f"{len(problems)} problems")
    for col in ("scorer", "strategy", *(f"N={n}" for n in budgets), "seconds"):
        table.add_column(col, justify="left" if col in ("scorer", "strategy") else "right")
    fig, axes = plt.subplots(1, len(scorers), figsize=(5 * len(scorers), 4), squeeze=False)
    for ax, scorer_name in zip(axes[0], scorers, strict=True):
        scorer = scorer_for(scorer_name)
        for strategy in args.strategies:
            cells = [run_cell(engine, problems, prompts, strategy, scorer, n, extra) for n in budgets]
            accs = [a for a, _ in cells]
            table.add_row(scorer_name, strategy, *(f"{a:.3f}" for a in accs), f"{sum(s for _, s in cells):.1f}")
            ax.plot(budgets, accs, marker="o", label=strategy)
        ax.set(xscale="log", xlabel="N (samples or candidate steps per round)", ylabel="accuracy",
               title=f"scorer: {scorer_name}")
        ax.set_xticks(budgets, [str(n) for n in budgets])
        ax.legend(fontsize=8)
    Console().print(table)
    out = OUT_DIR / ("guided_search_real.png" if args.real else "guided_search.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
