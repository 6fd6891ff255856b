"""Given solutions (ProcessBench rows: a problem with its solution steps) as a tree to label.

Instead of sampling, the steps are inserted as they are (origin "given"), joined by the delimiter so rollouts
continue the exact text; the human label (earliest wrong step, -1 for none) is kept as the ground truth.
"""

from __future__ import annotations

from search.problems import Problem
from search.sampling import JudgeFn, SampledSolutions, SamplingConfig, Solution
from search.tree import Tree


def has_given_solution(problem: Problem) -> bool:
    return isinstance(problem.meta.get("steps"), list) and bool(problem.meta["steps"])


def given_solutions(problem: Problem, cfg: SamplingConfig, judge: JudgeFn) -> SampledSolutions:
    steps = [s.strip() for s in problem.meta["steps"]]
    texts = [s + cfg.delimiter for s in steps[:-1]] + [steps[-1]]
    tree = Tree(problem.problem_id)
    path = tree.add_path(texts, origin="given")
    text = "".join(texts)
    verdict = judge(text, problem.gold_answer)
    leaf = path[-1]
    leaf.terminal, leaf.answer, leaf.outcome_correct = True, verdict.answer, bool(verdict.correct)
    label = problem.meta.get("label")
    sol = Solution(problem.problem_id, 0, path, text, 0, "given", verdict.answer, bool(verdict.correct),
                   true_first_error=label if isinstance(label, int) else None)
    return SampledSolutions(tree, [sol])
