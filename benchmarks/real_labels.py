"""Labeling strategies on real SmolLM2-135M solutions: agreement with linear MC and rollout cost.

Samples solutions once (the quickstart's prompts and problems), then labels deep copies of the same trees
with each strategy, so every strategy sees identical solutions. Prints, per strategy, rollouts and rollout
tokens per solution, how often its predicted first error equals linear's, and how often its hard step labels
agree with linear's on the steps both labeled. There is no ground truth here: linear k=4 is the reference.

    PYTHONPATH=. python -m benchmarks.real_labels --problems 8
"""

from __future__ import annotations

import argparse
import copy
import time

from cluster.transformers_config import TransformersConfig
from cluster.transformers_engine import TransformersEngine
from pipelines.build import labeling_options, sampling_config
from pipelines.config import load_config
from pipelines.inputs import load_inputs
from search.labeling import STRATEGIES, make_config
from search.program import run_programs
from search.sampling import build_prompt, sample_solutions
from verifier.answers import judge

REFERENCE = "linear k=4"
RUNS = [(REFERENCE, "linear", {"k": 4}), ("binary k=4", "binary", {"k": 4}),
        ("adaptive+binary cap=4", "adaptive", {"search": "binary", "batch": 1, "max_per_step": 4})]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=8)
    ap.add_argument("--config", default=None, help="run config (default: the quickstart)")
    args = ap.parse_args()
    cfg = load_config(args.config, {"problems.n": args.problems})
    engine = TransformersEngine(TransformersConfig(cfg.engine.model))  # the recipe's model, in process
    scfg = sampling_config(cfg)
    problems, _ = load_inputs(cfg.problems)
    prompts = {p.problem_id: build_prompt(engine.apply_chat_template, p, scfg) for p in problems}
    sampled = run_programs({p.problem_id: sample_solutions(p, prompts[p.problem_id], scfg, judge)
                            for p in problems}, engine.generate)
    n_solutions = sum(len(s.solutions) for s in sampled.values())
    correct = sum(sol.correct for s in sampled.values() for sol in s.solutions)
    print(f"{len(problems)} problems, {n_solutions} solutions, {correct} with the right answer")
    results = {}
    for name, strategy, options in RUNS:
        lcfg = make_config(strategy, {"rollout": labeling_options(cfg)["rollout"], **options})
        trees = {pid: copy.deepcopy(s) for pid, s in sampled.items()}
        start = time.perf_counter()
        results[name] = (run_programs(
            {p.problem_id: STRATEGIES[strategy].label(trees[p.problem_id].tree,
                                                      [sol.path for sol in trees[p.problem_id].solutions],
                                                      p, prompts[p.problem_id], lcfg, judge) for p in problems},
            engine.generate), time.perf_counter() - start)
    ref, _ = results[REFERENCE]
    print(f"{'strategy':24} {'roll/sol':>8} {'tok/sol':>8} {'first-error =':>13} {'step agree':>10} {'s':>6}")
    for name, (res, seconds) in results.items():
        rollouts = sum(r.n_rollouts for r in res.values())
        tokens = sum(r.rollout_tokens for r in res.values())
        same_fe = [a == b for pid in res for a, b in zip(res[pid].first_errors, ref[pid].first_errors, strict=True)]
        agree = [res[pid].labels[n].hard == ref[pid].labels[n].hard
                 for pid in res for n in res[pid].labels if n in ref[pid].labels]
        print(f"{name:24} {rollouts / n_solutions:8.2f} {tokens / n_solutions:8.0f} "
              f"{sum(same_fe) / len(same_fe):13.3f} {sum(agree) / max(1, len(agree)):10.3f} {seconds:6.1f}")


if __name__ == "__main__":
    main()
