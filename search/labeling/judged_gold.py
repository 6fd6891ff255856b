"""An open prompt's pseudo-gold chosen by an LLM judge (``labeling.open_gold = "llm-judge"``).

Self-consistency (``base.with_pseudo_gold``) trusts the most common answer even when most samples share one
mistake. Here the judge (``verifier.judge_llm``: ProcessBench's critic prompt) first critiques the sampled
solutions; those it finds no error in (verdict -1) are accepted, and the pseudo-gold is the most common
final answer among them (ties as in ``majority_answer``: the answer sampled first). Rollouts and outcomes are
then judged against it by the normal answer check, and every label of the problem says ``:llm-judge``. The
judge decides the pseudo-gold only: steps are labeled by the strategy's rollouts, as for any problem.

Which solutions: every distinct solution that ended with a final answer, each critiqued once (samples with
the same steps share a leaf in the tree, so they share one critique). Not one per distinct answer: accepting
one solution says nothing about another that reached the same answer another way, and the vote should count
only solutions the judge read. The cost is at most ``n_solutions`` requests per open prompt (each of
``judge.n`` critiques), against the labeling's rollouts from every step of every solution; they go out in one
batch from the problem's program, so they batch with every other request on the engines. The counts are kept
in the problem's ``meta["judge"]`` (``requests``, ``accepted``, ``found_error``, ``unparsable``).

When the judge accepts no solution (every critique finds an error or cannot be parsed, or no solution
states an answer) there is no pseudo-gold: the problem is stored unlabeled with a ``rejects`` row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cluster.problems.problem import Problem
from search.guided.base import majority_answer
from search.labeling.base import LLM_JUDGE, adopt_gold
from search.program import Program
from search.sampling import JudgeFn, SampledSolutions, Solution
from search.tool_loop import gather
from verifier.judge_llm import JudgeConfig, TemplateFn, judge_program

Messages = list[dict[str, str]]
RenderFn = Callable[[list[Messages]], list[str]]  # many conversations -> prompts (EnginePool.apply_chat_template)
_PROBES = ("@@tracemill-critic-0@@", "@@tracemill-critic-1@@")  # stand-ins for a critic prompt's text


@dataclass(frozen=True)
class Critic:
    """The judge of open prompts: its sampling settings and the engines' chat template for its prompt."""

    cfg: JudgeConfig
    template_fn: TemplateFn


@dataclass(frozen=True)
class JudgedGold:
    problem: Problem  # with the pseudo-gold and meta["judge"]; still without a gold answer when rejected
    reason: str = ""  # why there is no pseudo-gold ("" when there is one)


def critic_template(render: RenderFn) -> TemplateFn:
    """The engines' chat template for one-user-message conversations (the judge's), from one ``render`` call.

    Why: a critic prompt exists only once its problem's solutions are sampled, inside the problem's program,
    which cannot wait on an engine actor. So a search worker asks its engines once for the frame around a
    user message and puts each critic prompt into it. A template that does more than insert the message
    (it appears twice, or changed) shows in the second probe; then every prompt is rendered by ``render``.

    >>> t = critic_template(lambda convs: [f"<u>{c[0]['content']}</u>" for c in convs])
    >>> t([{"role": "user", "content": "Is 2 + 2 = 5 right?"}])
    '<u>Is 2 + 2 = 5 right?</u>'
    """
    first, second = render([[{"role": "user", "content": p}] for p in _PROBES])
    head, _, tail = first.partition(_PROBES[0])
    if first.count(_PROBES[0]) == 1 and second == head + _PROBES[1] + tail:
        def framed(messages: Messages) -> str:
            if len(messages) != 1 or messages[0]["role"] != "user":
                raise ValueError("the critic frame holds one user message")
            return head + messages[0]["content"] + tail
        return framed
    return lambda messages: render([messages])[0]


def judged_gold(problem: Problem, sampled: SampledSolutions, judge: JudgeFn, critic: Critic) -> Program[JudgedGold]:
    """Critique the open prompt's answered solutions; the pseudo-gold is the majority answer of the accepted.

    Yields one batch of critic requests (none when no solution states an answer).
    """
    answered = [s for s in sampled.solutions if s.answer is not None and s.path[-1].terminal]
    distinct: dict[str, Solution] = {}  # leaf id -> the first sample of that path
    for sol in answered:
        distinct.setdefault(sol.solution_id, sol)
    verdicts = yield from gather([judge_program(problem.question, [n.text for n in s.path], critic.template_fn,
                                                critic.cfg, group=problem.problem_id) for s in distinct.values()])
    verdict_of = dict(zip(distinct, verdicts, strict=True))
    counts = {"requests": len(distinct), "accepted": sum(v == -1 for v in verdicts),
              "found_error": sum(v is not None and v >= 0 for v in verdicts),
              "unparsable": sum(v is None for v in verdicts)}
    gold = majority_answer([s.answer for s in answered if verdict_of[s.solution_id] == -1])
    if gold is None:
        unanswered = len(sampled.solutions) - len(answered)
        why = (f"llm-judge accepted no solution: {counts['found_error']} with an error found, "
               f"{counts['unparsable']} critiques unparsable, {unanswered} solutions without a final answer")
        return JudgedGold(Problem(problem.problem_id, problem.question, "", problem.source,
                                  {**problem.meta, "judge": counts}), why)
    return JudgedGold(adopt_gold(problem, sampled, judge, gold, LLM_JUDGE, {"judge": counts}))
