"""Rollouts from tree nodes: the one place that turns (node, k) pairs into requests and judged ``Rollout``s.

Every labeling strategy estimates Monte Carlo values through ``rollout_batch``, so request keys, seeds and
judging are identical across strategies and a rollout already on a node is never sampled again: indices
continue from the node's existing rollouts and the key of rollout ``i`` is ``request_key(node_id, i, seed)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cluster.engine import GenRequest, request_key, seed_for
from cluster.problems.problem import Problem
from search.program import Program
from search.sampling import JudgeFn
from search.tool_loop import ToolSample, gather, generate_with_tools
from search.tools import ToolConfig
from search.tree import Node, Rollout


@dataclass(frozen=True)
class RolloutConfig:
    max_new_tokens: int = 512  # per continuation
    temperature: float = 0.8
    top_p: float = 1.0
    seed: int = 0  # base seed of rollout keys and sampling seeds
    tools: ToolConfig = field(default_factory=ToolConfig)  # tools.python: rollouts run their code blocks too

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("need max_new_tokens >= 1, temperature >= 0, 0 < top_p <= 1")


@dataclass
class RolloutCost:
    """What a labeling run spent: counted as results arrive, so it covers only rollouts it asked for."""

    rollouts: int = 0
    tokens: int = 0  # completion tokens of those rollouts


def rollout_batch(pairs: list[tuple[Node, int]], problem: Problem, prompt: str, cfg: RolloutConfig,
                  judge: JudgeFn, cost: RolloutCost | None = None) -> Program[list[Rollout]]:
    """Take ``k`` more rollouts at each node in ONE batch; append them to the nodes and return the new ones.

    Pairs naming the same node are merged (their ``k`` summed) so two callers never draw the same rollout
    index. Each continuation is judged on the full text (prefix + continuation) against the gold answer. With
    ``cfg.tools.python`` a rollout runs its code blocks as the solutions did; its text keeps their outputs.
    """
    merged: dict[str, tuple[Node, int]] = {}
    for node, k in pairs:
        if node.terminal:
            raise ValueError(f"node {node.node_id} is terminal: its value is its own outcome")
        if k > 0:
            merged[node.node_id] = (node, merged.get(node.node_id, (node, 0))[1] + k)
    todo = list(merged.values())
    requests = []
    for node, k in todo:
        key = request_key(node.node_id, node.n, cfg.seed)
        requests.append(GenRequest(request_key=key, prompt=prompt, prefix=node.prefix, n=k,
                                   max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                   top_p=cfg.top_p, seed=seed_for(key, cfg.seed), group=problem.problem_id))
    if cfg.tools.python:
        per_request = yield from gather([generate_with_tools(req, cfg.tools) for req in requests])
    else:
        results = yield requests
        per_request = [[ToolSample(s.text, s.token_ids, s.finish_reason) for s in r.samples] for r in results]
    new: list[Rollout] = []
    for (node, _), samples in zip(todo, per_request, strict=True):
        for sample in samples:
            index = node.n
            verdict = judge(node.prefix + sample.text, problem.gold_answer)
            rollout = Rollout(request_key(node.node_id, index, cfg.seed), node.node_id, index, sample.text,
                              len(sample.token_ids), sample.finish_reason, verdict.answer, bool(verdict.correct))
            node.rollouts.append(rollout)
            new.append(rollout)
            if cost is not None:
                cost.rollouts += 1
                cost.tokens += rollout.n_tokens
    return new
