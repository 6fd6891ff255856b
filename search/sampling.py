"""Sampling whole solutions for a problem: the prompt, one n-sample request, and the tree they grow.

The prompt holds the chat-templated question (after optional few-shot turns); a partial solution is never
put into the prompt but sent as ``GenRequest.prefix``, so every later rollout continues exactly the text the
engine produced. ``sample_solutions`` is a program (see ``search/program.py``): it yields one request and
never calls an engine itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any, Protocol

from cluster.engine import GenRequest, GenResult, request_key, seed_for
from cluster.problems.few_shot import few_shot_family
from cluster.problems.given import given_label, given_steps
from cluster.problems.problem import Problem
from cluster.problems.steps import DEFAULT_DELIMITER, split_steps
from search.program import Program
from search.tool_loop import ToolSample, generate_with_tools
from search.tools import ToolConfig, assign_calls, split_tool_steps
from search.tree import Node, Tree

TemplateFn = Callable[[list[dict[str, str]]], str]

# Prompt presets (``SamplingConfig.style``). "step-by-step" is the plain question (the worked examples show
# the step format). "chain-of-draft" (Xu et al., 2025) asks for a minimal draft of each step under a word
# budget and shows the worked examples drafted the same way: each step cut to its last words, which in the
# arith examples is the equation.
CHAIN_OF_DRAFT_WORDS = 5  # the word budget per step (the paper's)
CHAIN_OF_DRAFT = (f"Think step by step, but write only a minimal draft of each step, {CHAIN_OF_DRAFT_WORDS} words "
                  "at most, one step per paragraph. End with: The answer is N.")
PROMPT_STYLES = ("step-by-step", "chain-of-draft")


class Verdict(Protocol):
    answer: str | None
    correct: bool


JudgeFn = Callable[[str, str], Verdict]  # (solution text, gold answer) -> verdict, e.g. verifier.answers.judge


def config_from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    """Build a frozen config dataclass from a mapping; an unknown key is an error, not silently ignored.

    A nested mapping given for a field whose default is itself a config dataclass is built the same way.
    """
    by_name = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(by_name))
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown key(s) {unknown}; allowed: {sorted(by_name)}")
    values = dict(data)
    for name, value in data.items():
        f = by_name[name]
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        if isinstance(value, Mapping) and is_dataclass(default):
            values[name] = config_from_dict(type(default), value)
    return cls(**values)


@dataclass(frozen=True)
class SamplingConfig:
    n_solutions: int = 4  # full solutions per problem, asked for in one request (n = n_solutions)
    max_new_tokens: int = 512  # per solution
    temperature: float = 0.8
    top_p: float = 1.0
    delimiter: str = DEFAULT_DELIMITER  # step separator
    seed: int = 0  # base seed; per-request seeds derive from the request key
    # worked examples per family (cluster.problems.few_shot): {family: ((question, solution), ...)}; a problem
    # gets those of its own family only (arith examples before a GSM8K question would teach the wrong thing)
    few_shot: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    system_prompt: str | None = None
    tools: ToolConfig = field(default_factory=ToolConfig)  # tools.python: run code blocks, continue after output
    style: str = "step-by-step"  # prompt preset: one of PROMPT_STYLES

    def __post_init__(self) -> None:
        if self.n_solutions < 1 or self.max_new_tokens < 1:
            raise ValueError("n_solutions and max_new_tokens must be >= 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("temperature must be >= 0 and 0 < top_p <= 1")
        if not self.delimiter:
            raise ValueError("delimiter must be non-empty")
        if self.style not in PROMPT_STYLES:
            raise ValueError(f"style must be one of {list(PROMPT_STYLES)}, got {self.style!r}")
        # accept lists (from TOML/JSON) but store tuples so an example list cannot change under the search
        object.__setattr__(self, "few_shot", {str(family): tuple((str(q), str(s)) for q, s in examples)
                                              for family, examples in dict(self.few_shot).items()})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SamplingConfig:
        return config_from_dict(cls, data)


@dataclass
class Solution:
    """One sampled (or given) solution: its path in the tree and what the outcome verifier said."""

    problem_id: str
    sample_index: int
    path: list[Node]  # first step first; the last node is the solution's leaf
    text: str
    n_tokens: int
    finish_reason: str
    answer: str | None
    correct: bool
    true_first_error: int | None = None  # ground truth where known (sim engine, ProcessBench)

    @property
    def solution_id(self) -> str:
        return self.path[-1].node_id if self.path else ""


@dataclass
class SampledSolutions:
    tree: Tree
    solutions: list[Solution] = field(default_factory=list)
    result: GenResult | None = None  # the raw engine result (None when tool rounds made several)


def build_prompt(template_fn: TemplateFn, problem: Problem, cfg: SamplingConfig) -> str:
    """Chat-template the question after the optional system prompt and few-shot turns."""
    return template_fn(prompt_messages(problem, cfg))


def prompt_messages(problem: Problem, cfg: SamplingConfig) -> list[dict[str, str]]:
    """The conversation a prompt renders: system prompt, the worked examples of the problem's family
    (``cluster.problems.few_shot.few_shot_family``; none fit an open prompt), then the question (in ``cfg.style``)."""
    messages: list[dict[str, str]] = []
    if cfg.system_prompt:
        messages.append({"role": "system", "content": cfg.system_prompt})
    draft = cfg.style == "chain-of-draft"
    family = few_shot_family(problem)
    examples = cfg.few_shot.get(family, ()) if family is not None else ()
    for question, solution in examples:
        if draft:
            question, solution = f"{question}\n\n{CHAIN_OF_DRAFT}", draft_solution(solution, cfg.delimiter)
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": solution}]
    question = f"{problem.question}\n\n{CHAIN_OF_DRAFT}" if draft else problem.question
    messages.append({"role": "user", "content": question})
    return messages


def draft_solution(solution: str, delimiter: str, words: int = CHAIN_OF_DRAFT_WORDS) -> str:
    """A worked solution as a Chain-of-Draft example: each step cut to its last ``words`` words.

    >>> draft_solution("She gives half of 48 away: 48 / 2 = 24.", "|")
    '48 / 2 = 24.'
    """
    return delimiter.join(" ".join(step.split()[-words:]) for step in solution.split(delimiter))


def step_token_counts(steps: list[str], n_tokens: int) -> list[int]:
    """Share a sample's token count among its steps in proportion to characters (largest remainder).

    Engines return one token list per sample, and re-tokenizing a step alone can differ from how it was
    generated, so per-step counts are an estimate whose sum is exact.
    """
    chars = sum(len(s) for s in steps)
    if not steps or chars == 0:
        return [0] * len(steps)
    raw = [n_tokens * len(s) / chars for s in steps]
    counts = [int(r) for r in raw]
    by_remainder = sorted(range(len(steps)), key=lambda i: raw[i] - counts[i], reverse=True)
    for i in by_remainder[: n_tokens - sum(counts)]:
        counts[i] += 1
    return counts


def sample_solutions(problem: Problem, prompt: str, cfg: SamplingConfig,
                     judge: JudgeFn) -> Program[SampledSolutions]:
    """Ask for ``n_solutions`` solutions in one request, split them into steps and insert them into a tree.

    A leaf is marked terminal (with answer and outcome) only when the sample ended on its own: a sample cut
    off at ``max_new_tokens`` has no final answer, so its last step is an ordinary inner step. With
    ``cfg.tools.python`` each sample runs its code blocks as it goes (``search/tool_loop.py``) and every step
    that made a call keeps it (``Node.tool``).
    """
    key = request_key(problem.problem_id, "solutions", cfg.seed)
    req = GenRequest(request_key=key, prompt=prompt, prefix="", n=cfg.n_solutions,
                     max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                     seed=seed_for(key, cfg.seed), group=problem.problem_id)
    if cfg.tools.python:
        result = None
        samples = yield from generate_with_tools(req, cfg.tools)
    else:
        (result,) = yield [req]
        samples = [ToolSample(s.text, s.token_ids, s.finish_reason) for s in result.samples]
    tree = Tree(problem.problem_id)
    out = SampledSolutions(tree, result=result)
    for index, sample in enumerate(samples):
        steps = split_tool_steps(sample.text, cfg.delimiter) if cfg.tools.python else \
            split_steps(sample.text, cfg.delimiter)
        if not steps:
            continue  # an empty sample has no steps to label
        path = tree.add_path(steps, step_token_counts(steps, len(sample.token_ids)),
                             tools=assign_calls(steps, sample.calls) if sample.calls else None)
        verdict = judge(sample.text, problem.gold_answer)
        if sample.finish_reason != "length":
            leaf = path[-1]
            leaf.terminal, leaf.answer, leaf.outcome_correct = True, verdict.answer, bool(verdict.correct)
        out.solutions.append(Solution(problem.problem_id, index, path, sample.text, len(sample.token_ids),
                                      sample.finish_reason, verdict.answer, bool(verdict.correct)))
    return out


def given_solutions(problem: Problem, cfg: SamplingConfig, judge: JudgeFn) -> SampledSolutions:
    """A problem's given solution (``cluster.problems.given``) as a tree to label instead of sampling.

    The steps are inserted as they are (origin "given"), joined by the delimiter so rollouts continue the
    exact text; the human label is kept as the solution's ``true_first_error``.
    """
    steps = given_steps(problem)
    texts = [s + cfg.delimiter for s in steps[:-1]] + [steps[-1]]
    tree = Tree(problem.problem_id)
    path = tree.add_path(texts, origin="given")
    text = "".join(texts)
    verdict = judge(text, problem.gold_answer)
    leaf = path[-1]
    leaf.terminal, leaf.answer, leaf.outcome_correct = True, verdict.answer, bool(verdict.correct)
    sol = Solution(problem.problem_id, 0, path, text, 0, "given", verdict.answer, bool(verdict.correct),
                   true_first_error=given_label(problem))
    return SampledSolutions(tree, [sol])
