"""What every job that writes a run shares: its id, its record in ``runs``, and the engines it runs on.

``tracemill run``/``label`` (``pipelines.run``) and ``tracemill search`` (``pipelines.search_job``) open a run
the same way: the id is checked before anything is written (a resume needs the same config, a fresh id must be
new), the run is recorded as running, then finished or failed with its stats; engines are launched on a Ray
that was joined or started for the job, after Ray said it can place them.

Example::

    check_run_id(root, cfg, run_id, resume)
    with recorded_run(root, run_id, cfg, summary.stats), engine_pool(spec, cfg) as pool:
        ...
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray

from cluster.actors import ActorSpec, actor_demand
from cluster.pool import EnginePool, PoolConfig
from cluster.ray_session import connect_ray
from cluster.resources import Unschedulable, require_placeable
from pipelines.build import code_version
from pipelines.config import ConfigError, RunConfig
from storage.catalog import Catalog
from storage.layout import check_name, is_disk_full
from storage.runs import fail_run, finish_run, read_run, start_run


def check_run_id(root: Path, cfg: Any, run_id: str | None, resume: bool) -> None:
    """``ConfigError`` (before anything is written) unless ``run_id`` can start or resume a run of ``cfg``.

    The id must be a safe path component; ``resume`` needs an existing run started with the same config
    (the message names the keys that differ: a resume skips committed shards, so two configs would mix);
    a fresh run must not reuse an existing id.
    """
    if run_id is None:
        if resume:
            raise ConfigError("config error: --resume needs the id of the run to finish")
        return
    try:
        check_name("run id", run_id)
    except ValueError as err:
        raise ConfigError(f"config error: {err}") from None
    previous = read_run(root, run_id)
    if not resume:
        if previous is not None:
            raise ConfigError(f"config error: run {run_id!r} already exists under {root} ({previous.status}); "
                              f"--resume {run_id} finishes it")
        return
    if previous is None:
        raise ConfigError(f"config error: --resume: no run {run_id!r} under {root}")
    changed = config_diff(json.loads(previous.config_json), cfg.model_dump(mode="json"))
    if changed:
        shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
        raise ConfigError(f"config error: --resume {run_id}: the config differs from the run's in {shown}")


def config_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two config dicts (a key on one side only counts)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return [] if old == new else [prefix or "<root>"]
    out: list[str] = []
    for key in sorted(set(old) | set(new), key=str):
        out += config_diff(old.get(key, _MISSING), new.get(key, _MISSING), f"{prefix}.{key}" if prefix else str(key))
    return out


_MISSING = object()


@contextmanager
def recorded_run(root: Path, run_id: str, cfg: Any, stats: Callable[[], dict[str, Any]]) -> Iterator[None]:
    """The run is ``running`` inside the block, ``done`` with ``stats()`` after it, ``failed`` if it raised.

    On a full disk the error gets notes saying where to free space and how to finish the run
    (``--resume``); the catalog is refreshed at the end so ``duckdb catalog.duckdb`` sees the run.
    """
    start_run(root, run_id, cfg.model_dump(mode="json"), model=cfg.engine.recorded_model, engine=cfg.engine.backend,
              code_version=code_version())
    try:
        yield
    except BaseException as err:
        _mark_failed(root, run_id, err, stats())
        raise
    finish_run(root, run_id, stats())
    with Catalog(root):
        pass


def _mark_failed(root: Path, run_id: str, err: BaseException, stats: dict[str, Any]) -> None:
    try:
        fail_run(root, run_id, f"{type(err).__name__}: {err}", stats)
    except OSError as second:  # the disk is so full that even the freed reserve did not hold the row
        err.add_note(f"run {run_id} could not be marked failed either ({second.strerror}); it still reads running")
        return
    if is_disk_full(err):
        err.add_note(f"run {run_id} is marked failed; free some space under {root}, then finish it with "
                     f"tracemill run --config <its config> --resume {run_id}")


@contextmanager
def engine_pool(spec: ActorSpec, cfg: RunConfig, ray_address: str | None = None) -> Iterator[EnginePool]:
    """Engine actors of ``spec`` (``engine.replicas`` of them) on a joined or local Ray, for one block.

    Before launching, Ray must be able to place them: a local Ray this job started is checked for certain
    against its totals, then every placement is probed within ``ray.placement_timeout_s``; what cannot be
    placed is a ``ConfigError`` (one line, exit 2, the run marked failed). A Ray this job started ends
    with the block; a joined cluster stays up.
    """
    started_ray = connect_ray(ray_address if ray_address is not None else cfg.ray.address, cfg.ray.num_cpus)
    try:
        try:
            require_placeable([actor_demand(spec, cfg.engine.replicas)], cfg.ray.placement_timeout_s,
                              certain=started_ray)
        except Unschedulable as err:
            raise ConfigError(f"config error: {err} (set by engine.num_cpus, engine.num_gpus, engine.replicas, "
                              "ray.num_cpus)") from None
        pool = EnginePool.launch(spec, cfg.engine.replicas, PoolConfig(max_retries=cfg.ray.max_retries))
        try:
            yield pool
        finally:
            pool.shutdown()
    finally:
        if started_ray:
            ray.shutdown()
