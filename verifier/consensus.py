"""Consensus step labels: Monte Carlo labels checked against other voters (arithmetic tool, LLM judge).

Every voter gives per-step votes on a solution: True (good), False (bad) or None (no opinion). Voters that
judge a whole solution (the tool checker, the judge) give a first-error index, turned into votes by
``votes_from_first_error`` (good before it, bad from it on — the same prefix semantics as MC hard labels).
A disagreement policy decides the label when voters differ from MC:

- ``keep``: MC wins; ``flag``: MC wins and the row is flagged for review; ``drop``: no label;
- ``strict``: bad if any voter says bad (a tool that found a wrong claim overrides MC's luck).

Rows go to ``step_labels`` with ``label_source = "consensus:mc+arith"`` (the voters that voted), with
``:flagged`` appended to flagged rows (``WHERE label_source LIKE '%:flagged'``). The flag lives in the
source string rather than a new column so the ``step_labels`` schema, and every writer of it, stays as is.

Example::

    >>> decide(True, {"arith": False}, "flag")
    Decision(hard=True, sources=('mc', 'arith'), agree=False, flagged=True)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from verifier.arith_claims import first_error_by_claims

Vote = bool | None
MC = "mc"
SOURCE_PREFIX = "consensus:"
FLAG_SUFFIX = ":flagged"


@dataclass(frozen=True)
class Decision:
    hard: bool  # the consensus hard label
    sources: tuple[str, ...]  # voters that voted, MC first
    agree: bool  # every voter agreed with MC
    flagged: bool


def _keep(mc: bool, others: list[bool]) -> tuple[bool | None, bool]:
    return mc, False


def _flag(mc: bool, others: list[bool]) -> tuple[bool | None, bool]:
    return mc, any(v != mc for v in others)


def _drop(mc: bool, others: list[bool]) -> tuple[bool | None, bool]:
    return (None if any(v != mc for v in others) else mc), False


def _strict(mc: bool, others: list[bool]) -> tuple[bool | None, bool]:
    return mc and all(others), False


# policy -> (MC vote, other votes) -> (hard label or None to drop, flagged)
POLICIES: dict[str, Callable[[bool, list[bool]], tuple[bool | None, bool]]] = {
    "keep": _keep, "flag": _flag, "drop": _drop, "strict": _strict,
}


@dataclass(frozen=True)
class ConsensusConfig:
    policy: str = "flag"  # keep | flag | drop | strict (see module docstring)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {sorted(POLICIES)}")


def votes_from_first_error(first_error: int | None, n_steps: int) -> list[Vote]:
    """Per-step votes of a whole-solution verdict: good before the error, bad from it; None: no verdict."""
    if first_error is None:
        return [None] * n_steps
    cut = n_steps if first_error < 0 else first_error
    return [i < cut for i in range(n_steps)]


def arith_votes(steps: Sequence[str]) -> list[Vote]:
    """The arithmetic tool checker's votes: good until its first wrong claim, bad from there on."""
    return votes_from_first_error(first_error_by_claims(list(steps)), len(steps))


def decide(mc: Vote, others: Mapping[str, Vote], policy: str) -> Decision | None:
    """The consensus label of one step; None where MC has no label or the policy drops it."""
    if mc is None:
        return None
    voted = {name: v for name, v in others.items() if v is not None}
    hard, flagged = POLICIES[policy](mc, list(voted.values()))
    if hard is None:
        return None
    return Decision(hard, (MC, *voted), all(v == mc for v in voted.values()), flagged)


def label_source(d: Decision) -> str:
    return SOURCE_PREFIX + "+".join(d.sources) + (FLAG_SUFFIX if d.flagged else "")


def first_error_of(decisions: Sequence[Decision | None]) -> int | None:
    """First bad step of a solution's decisions; -1 if all good; None if an undecided step comes first."""
    for i, d in enumerate(decisions):
        if d is None:
            return None
        if not d.hard:
            return i
    return -1


def combine_first_errors(mc: int | None, others: Mapping[str, int | None], n_steps: int,
                         policy: str) -> int | None:
    """Consensus first error of one solution from whole-solution verdicts (e.g. ProcessBench predictions)."""
    mc_votes = votes_from_first_error(mc, n_steps)
    other_votes = {name: votes_from_first_error(fe, n_steps) for name, fe in others.items()}
    return first_error_of([decide(mc_votes[i], {n: v[i] for n, v in other_votes.items()}, policy)
                           for i in range(n_steps)])


def consensus_rows(paths: Sequence[Sequence[Any]], mc_labels: Mapping[str, Any],
                   others: Mapping[str, Sequence[Sequence[Vote]]], cfg: ConsensusConfig, run_id: str,
                   problem_id: str) -> list[dict]:
    """``step_labels`` rows for the nodes of ``paths`` (objects with ``node_id``) that have an MC label.

    ``mc_labels`` maps node id -> a labeling ``NodeLabel``; ``others[source][path][step]`` are that voter's
    votes. A node shared by several paths is decided once, on the first path that reaches it.
    """
    rows: dict[str, dict] = {}
    for p, path in enumerate(paths):
        for i, node in enumerate(path):
            lab = mc_labels.get(node.node_id)
            if node.node_id in rows or lab is None:
                continue
            d = decide(lab.hard, {name: votes[p][i] for name, votes in others.items()}, cfg.policy)
            if d is None:
                continue
            rows[node.node_id] = {
                "run_id": run_id, "node_id": node.node_id, "problem_id": problem_id, "strategy": lab.strategy,
                "n": lab.n, "n_correct": lab.n_correct, "value": lab.value, "hard": d.hard,
                # an overruled good label keeps no MC value: its soft label becomes 0 like its hard one
                "soft": lab.soft if d.hard == lab.hard else 0.0, "label_source": label_source(d),
            }
    return list(rows.values())
