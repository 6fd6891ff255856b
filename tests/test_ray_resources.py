"""Resources Ray cannot place fail the run at once (one line, exit 2, run failed) instead of hanging.

The CLI cases run ``tracemill run`` in a subprocess with a generous ``timeout=``: a run that hangs on a
pending actor fails the test (``TimeoutExpired``) instead of blocking the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray

from cluster.actors import ActorSpec, actor_demand, actor_options
from cluster.resources import Demand, Unschedulable, require_placeable, shortfall
from storage.runs import read_run

REPO = Path(__file__).resolve().parent.parent
CPU_NODE = {"CPU": 2.0, "memory": 8 * 2**30, "node:10.0.0.1": 1.0}
GPU_NODE = {"CPU": 8.0, "GPU": 1.0, "memory": 32 * 2**30}


def engines(count: int, **spec) -> Demand:
    return actor_demand(ActorSpec(backend="sim", **spec), count)


# -- the certain check: what can never fit ---------------------------------------------------------------

def test_a_gpu_actor_on_a_cpu_only_cluster_is_refused_naming_the_gpu():
    reason = shortfall([engines(2, num_gpus=1)], [CPU_NODE, CPU_NODE])
    assert reason == "engine actor x2 needs GPU 1 each: no node has it (cluster: CPU 4, memory 16.0 GiB)"


def test_more_cpus_than_any_node_has_is_refused_even_when_the_cluster_total_would_cover_it():
    assert "needs CPU 3 each: no node has that much" in shortfall([engines(1, num_cpus=3)], [CPU_NODE, CPU_NODE])
    assert "needs CPU 1000 each" in shortfall([engines(2, num_cpus=1000)], [CPU_NODE])


def test_replicas_that_each_fit_but_not_together_are_refused_by_the_total():
    reason = shortfall([engines(3, num_cpus=1)], [CPU_NODE])
    assert reason.startswith("engine actor x3 need CPU 3 in all, the cluster has 2")
    assert shortfall([engines(2, num_cpus=1)], [CPU_NODE]) is None


def test_memory_and_custom_resources_are_checked_like_cpus():
    assert "needs memory 64.0 GiB each" in shortfall([engines(1, memory=64 * 2**30)], [GPU_NODE, CPU_NODE])
    assert "needs tpu_slice 1 each: no node has it" in shortfall([engines(1, resources={"tpu_slice": 1})],
                                                                 [GPU_NODE])
    assert shortfall([engines(1, resources={"tpu_slice": 1})], [{**GPU_NODE, "tpu_slice": 1.0}]) is None


def test_a_tensor_parallel_group_must_fit_on_one_node():
    tp = engines(1, num_gpus=2)
    assert tp.strategy == "STRICT_PACK"
    assert "needs GPU 2 each (on one node): no node has that much" in shortfall([tp], [GPU_NODE, GPU_NODE])
    assert shortfall([tp], [{**GPU_NODE, "GPU": 2.0}]) is None


def test_several_kinds_of_actor_add_up_and_zero_resource_actors_always_fit():
    workers = Demand("search worker", ({"CPU": 1.0},), count=1)
    assert "engine actor x2, search worker x1 need CPU 3 in all" in shortfall(
        [engines(2, num_cpus=1), workers], [CPU_NODE])
    assert shortfall([engines(50, num_cpus=0)], [CPU_NODE]) is None


def test_the_demand_is_what_the_actor_is_started_with():
    spec = ActorSpec(backend="sim", num_cpus=0.5, num_gpus=0.25, memory=2**30, resources={"fast": 1})
    opts, [bundle] = actor_options(spec), actor_demand(spec, 1).placed_bundles()
    assert bundle == {"CPU": opts["num_cpus"], "GPU": opts["num_gpus"], "memory": opts["memory"],
                      **opts["resources"]}
    with pytest.raises(ValueError, match="custom resources"):
        ActorSpec(backend="sim", resources={"GPU": 1})


# -- the placement probe (joined clusters): a timeout, and nothing left reserved ---------------------------

@pytest.mark.slow
def test_the_probe_fails_after_the_timeout_on_what_no_node_offers_and_frees_what_it_reserved(ray_cluster):
    free = ray.available_resources()["CPU"]
    with pytest.raises(Unschedulable, match=r"1 of 2 placements \(engine actor: GPU 1 each\) not placed "
                                            r"within 2 s \(ray.placement_timeout_s\)"):
        require_placeable([engines(1, num_cpus=1), engines(1, num_cpus=0, num_gpus=1)], timeout_s=2,
                          certain=False)
    require_placeable([engines(2, num_cpus=1)], timeout_s=30, certain=False)  # both CPUs: placeable
    states = {g["state"] for g in ray.util.placement_group_table().values()}
    assert states == {"REMOVED"}  # every probe group (3) was removed again ...
    deadline = time.monotonic() + 60
    while ray.available_resources().get("CPU", 0) < free:  # ... and Ray gives their CPUs back (async)
        assert time.monotonic() < deadline, ray.available_resources()
        time.sleep(0.1)


@pytest.mark.slow
def test_a_certain_cluster_refuses_before_reserving_anything(ray_cluster):
    with pytest.raises(Unschedulable, match="needs CPU 3 each"):
        require_placeable([engines(1, num_cpus=3)], timeout_s=600, certain=True)


# -- the CLI: the configs from issue 12 ---------------------------------------------------------------------

def _run_cli(root: Path, *sets: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AUTH_MODE": "token", "TRACEMILL_NO_PROGRESS": "1"}
    cmd = [sys.executable, "-m", "pipelines.cli", "run", "-c", str(REPO / "configs" / "sim.toml"),
           "--set", f"storage.root={str(root)!r}", "--no-report", "--run-id", "unplaceable"]
    for item in sets:
        cmd += ["--set", item]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)


@pytest.mark.slow
@pytest.mark.parametrize("setting, expected", [
    ("engine.num_gpus=1", "engine actor x2 needs GPU 1 each: no node has it"),
    ("engine.num_cpus=1000", "engine actor x2 needs CPU 1000 each: no node has that much"),
    ("engine.replicas=400", "engine actor x400 need CPU 400 in all"),
])
def test_an_unschedulable_config_exits_2_with_one_line_and_the_run_failed(tmp_path, setting, expected):
    out = _run_cli(tmp_path, setting)
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert out.returncode == 2, out.stdout + out.stderr
    assert len(lines) == 1 and lines[0].startswith("error: config error: ") and expected in lines[0], lines
    record = read_run(tmp_path, "unplaceable")
    assert record is not None and record.status == "failed" and expected in json.loads(record.stats_json)["error"]


@pytest.mark.slow
def test_zero_local_cpus_is_refused_at_config_load_and_writes_nothing(tmp_path):
    out = _run_cli(tmp_path / "data", "ray.num_cpus=0")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: config error: ray.num_cpus: Input should be greater than or equal to 1 (got 0)"]
    assert not (tmp_path / "data").exists()
