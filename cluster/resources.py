"""Fail fast on resources Ray can never place, instead of waiting forever on a pending actor.

Ray queues an actor it cannot place (a GPU on a CPU-only cluster, more CPUs than any node has) and waits,
silently, for a node that may never come. A run asks first, with a ``Demand`` per kind of actor it will
start (each engine actor; a tensor-parallel engine's bundle group):

- On a cluster whose nodes are all known (a local Ray this process started: no autoscaler, no other jobs)
  ``shortfall`` answers for certain from the nodes' totals: a copy that fits on no node, or more in all than
  the cluster has, is refused at once.
- Anywhere, every copy is then reserved as a placement group and must be placed within ``timeout_s``: on a
  joined or autoscaling cluster that is the only honest test (a node may still join). The probe groups are
  removed again before the actors start (Ray frees their resources asynchronously; an actor launched at
  once waits the moment that takes), so they take nothing from the run.

Either way the answer is ``Unschedulable`` with a one-line message naming what was asked and what the
cluster has.

Example:
    >>> need = Demand("engine actor", ({"CPU": 1.0, "GPU": 1.0},), count=2)
    >>> shortfall([need], [{"CPU": 8.0, "memory": 1e9}])
    'engine actor x2 needs GPU 1 each: no node has it (cluster: CPU 8, memory 0.9 GiB)'
    >>> require_placeable([need], timeout_s=60, certain=True)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import ray
from ray.util.placement_group import placement_group, remove_placement_group


class Unschedulable(RuntimeError):
    """Ray cannot place what a run asks for; the message is one line."""


@dataclass(frozen=True)
class Demand:
    """``count`` copies of ``bundles`` (one actor's resources; a multi-GPU engine's group of GPU bundles).

    ``strategy`` is how one copy's bundles must lie: ``STRICT_PACK`` all on one node (tensor parallelism),
    ``PACK`` anywhere. Resource names are Ray's (``CPU``, ``GPU``, ``memory`` in bytes, custom names).
    """

    what: str  # names the copies in messages: "engine actor"
    bundles: tuple[Mapping[str, float], ...]
    count: int = 1
    strategy: Literal["PACK", "STRICT_PACK"] = "PACK"

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError("count must be >= 0")
        if any(v < 0 for b in self.bundles for v in b.values()):
            raise ValueError("resource amounts must be >= 0")

    def placed_bundles(self) -> list[dict[str, float]]:
        """The bundles that reserve anything (Ray refuses empty bundles; a zero-resource actor always fits)."""
        out = [{k: float(v) for k, v in b.items() if v > 0} for b in self.bundles]
        return [b for b in out if b]

    def per_copy(self) -> dict[str, float]:
        """What one copy takes in all, per resource."""
        total: dict[str, float] = {}
        for bundle in self.placed_bundles():
            for name, amount in bundle.items():
                total[name] = total.get(name, 0.0) + amount
        return total


def shortfall(demands: Sequence[Demand], nodes: Sequence[Mapping[str, float]]) -> str | None:
    """Why ``demands`` can certainly not all be placed on ``nodes`` (each node's total resources), or None.

    Checks two necessary conditions, so a refusal is never wrong: each copy fits on some node by itself
    (every bundle somewhere; STRICT_PACK: all of one copy on one node), and the cluster's totals cover every
    copy together. Packing many copies onto fragmented nodes is left to the placement probe.
    """
    totals: dict[str, float] = {}
    for node in nodes:
        for name, amount in node.items():
            totals[name] = totals.get(name, 0.0) + amount
    have = _describe(totals)
    for d in demands:
        if d.count == 0 or not d.placed_bundles():
            continue
        copies = f"{d.what} x{d.count}"
        units = [d.per_copy()] if d.strategy == "STRICT_PACK" else d.placed_bundles()
        for unit in units:
            if not any(_fits(unit, node) for node in nodes):
                missing = [n for n in unit if not any(node.get(n, 0.0) >= unit[n] for node in nodes)]
                name = (missing or list(unit))[0]
                where = "no node has it" if totals.get(name, 0.0) == 0 else "no node has that much"
                each = "each (on one node)" if d.strategy == "STRICT_PACK" else "each"
                return f"{copies} needs {name} {_amount(name, unit[name])} {each}: {where} (cluster: {have})"
    needed: dict[str, float] = {}
    for d in demands:
        for name, amount in d.per_copy().items():
            needed[name] = needed.get(name, 0.0) + amount * d.count
    for name, amount in needed.items():
        if amount > totals.get(name, 0.0) + 1e-9:
            asked = ", ".join(f"{d.what} x{d.count}" for d in demands if d.count and name in d.per_copy())
            return (f"{asked} need {name} {_amount(name, amount)} in all, the cluster has "
                    f"{_amount(name, totals.get(name, 0.0))} (cluster: {have})")
    return None


def require_placeable(demands: Sequence[Demand], timeout_s: float, certain: bool) -> None:
    """Raise ``Unschedulable`` unless Ray places every copy of ``demands`` within ``timeout_s`` seconds.

    ``certain``: this cluster's nodes are all there is (a local Ray), so its totals are checked first and
    a demand that can never fit fails at once instead of after the timeout.
    """
    if certain:
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        reason = shortfall(demands, nodes)
        if reason is not None:
            raise Unschedulable(reason)
    groups = [(d, placement_group(d.placed_bundles(), strategy=d.strategy))
              for d in demands for _ in range(d.count) if d.placed_bundles()]
    if not groups:
        return
    refs = [group.ready() for _, group in groups]
    try:
        ready = set(ray.wait(refs, num_returns=len(refs), timeout=timeout_s)[0])
        if len(ready) < len(refs):
            stuck = [d for (d, _), ref in zip(groups, refs, strict=True) if ref not in ready]
            first = stuck[0]
            raise Unschedulable(
                f"{len(stuck)} of {len(groups)} placements ({first.what}: {_describe(first.per_copy())} each) "
                f"not placed within {timeout_s:g} s (ray.placement_timeout_s); cluster now has "
                f"{_describe(ray.available_resources())} free of {_describe(ray.cluster_resources())}")
    finally:
        for _, group in groups:
            remove_placement_group(group)


def _fits(unit: Mapping[str, float], node: Mapping[str, float]) -> bool:
    return all(node.get(name, 0.0) >= amount for name, amount in unit.items())


def _amount(name: str, value: float) -> str:
    if name in ("memory", "object_store_memory"):
        return f"{value / 2**30:.1f} GiB"
    return f"{value:g}"


def _describe(resources: Mapping[str, float]) -> str:
    """The resources a user sets (CPU, GPU, memory, custom), without Ray's per-node ``node:...`` labels."""
    shown = {k: v for k, v in resources.items()
             if not k.startswith("node:") and k != "object_store_memory" and not k.startswith("accelerator_type")}
    order = ["CPU", "GPU", "memory"]
    names = sorted(shown, key=lambda k: (order.index(k) if k in order else len(order), k))
    return ", ".join(f"{k} {_amount(k, shown[k])}" for k in names) or "nothing"
