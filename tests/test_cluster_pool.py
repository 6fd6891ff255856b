"""EnginePool and EngineActor on a single-node local Ray: routing, batching, dedupe, retries, the async driver."""

from __future__ import annotations

import pytest
import ray

from cluster.actors import ActorSpec, launch_actor
from cluster.backends import build_engine
from cluster.engine import GenRequest
from cluster.pool import EnginePool, GenerationFailed, HashRing, PoolConfig, run_programs_async
from cluster.sim_engine import SimEngine
from search.program import run_programs
from tests.cluster_fixtures import FLAKY, POISON, programs, prompts


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False)  # never join another Ray on this machine
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def pool2(local_ray):
    pool = EnginePool.launch(ActorSpec(backend="sim", num_cpus=0.5), num_actors=2)
    yield pool
    pool.shutdown()


def test_ring_walk_visits_every_member_once_starting_at_the_owner():
    ring = HashRing(range(4), virtual_nodes=16)
    for key in ("a", "b", "problem-17"):
        order = list(ring.walk(key))
        assert sorted(order) == [0, 1, 2, 3]
        assert order == list(ring.walk(key))  # stable


def test_ring_losing_a_member_moves_only_its_keys_and_spreads_load():
    keys = [f"g{i}" for i in range(2000)]
    big, small = HashRing(range(4), 64), HashRing(range(3), 64)
    owners_big = {k: next(big.walk(k)) for k in keys}
    for k in keys:
        if owners_big[k] != 3:
            assert next(small.walk(k)) == owners_big[k]
    shares = [sum(o == m for o in owners_big.values()) / len(keys) for m in range(4)]
    assert min(shares) > 0.15


def test_backend_registry_builds_by_name_and_by_import_path():
    assert isinstance(build_engine("sim", {"latency_s": 0.0}), SimEngine)
    assert type(build_engine(FLAKY)).__name__ == "FlakySim"
    with pytest.raises(KeyError, match="unknown engine backend"):
        build_engine("nope")


def test_pool_generate_matches_the_engine_in_process(pool2):
    ps = prompts(4)
    reqs = [GenRequest(f"k{i}", p, n=2, seed=i, group=k) for i, (k, p) in enumerate(ps.items())]
    got = pool2.generate(reqs)
    want = SimEngine().generate(reqs)
    assert [r.request_key for r in got] == [r.request_key for r in reqs]
    assert [[s.text for s in r.samples] for r in got] == [[s.text for s in r.samples] for r in want]


def test_same_group_goes_to_one_actor_and_groups_spread_over_actors(pool2):
    seen: dict[str, set[str]] = {}
    for k, p in prompts(24, seed=1).items():
        reqs = [GenRequest(f"{k}-{j}", p, seed=j, group=k) for j in range(3)]
        for res in pool2.generate(reqs):
            seen.setdefault(k, set()).add(res.engine_id)
    assert all(len(ids) == 1 for ids in seen.values())
    assert len(set().union(*seen.values())) == 2


def test_overloaded_owner_spills_to_the_least_loaded_actor(local_ray):
    pool = EnginePool.launch(ActorSpec(backend="sim", num_cpus=0.5), 2,
                             PoolConfig(overload_factor=1.0, overload_slack=2))
    try:
        p = next(iter(prompts(1).values()))
        results = pool.generate([GenRequest(f"r{j}", p, seed=j, group="one") for j in range(20)])
        assert len({r.engine_id for r in results}) == 2
        assert sum(c.spilled for c in pool.counters) > 0
    finally:
        pool.shutdown()


def test_duplicate_request_in_flight_is_sent_once_and_shared(pool2):
    p = next(iter(prompts(1, seed=2).values()))
    req = GenRequest("dup-key", p, seed=3, group="g")
    sent_before = sum(c.sent for c in pool2.counters)
    t1, t2 = pool2.submit([req]), pool2.submit([req, req])
    done = dict(pool2.wait([t1, t2]))
    while len(done) < 2:
        done.update(pool2.wait([t1, t2]))
    assert sum(c.sent for c in pool2.counters) - sent_before == 1
    assert done[t1][0].samples[0].text == done[t2][0].samples[0].text == done[t2][1].samples[0].text


def test_async_driver_gives_the_same_results_as_lockstep_in_process(pool2):
    ps = prompts(12, seed=3)
    want = run_programs(dict(programs(ps)), SimEngine().generate)
    done: list[str] = []
    outcome = run_programs_async(programs(ps), pool2, on_done=lambda k, _: done.append(k), max_active=5)
    assert outcome.results == want and not outcome.failed
    assert sorted(done) == sorted(ps)


def test_actor_merges_concurrent_calls_into_one_engine_batch(local_ray):
    actor = launch_actor(ActorSpec(backend="sim", engine={"latency_s": 0.2}, num_cpus=0.5))
    p = next(iter(prompts(1).values()))
    refs = [actor.generate.remote([GenRequest(f"c{i}", p, seed=i)]) for i in range(8)]
    assert [r[0].request_key for r in ray.get(refs)] == [f"c{i}" for i in range(8)]
    stats = ray.get(actor.stats.remote())
    assert stats["calls"] == 8 and stats["requests"] == 8 and stats["batches"] < 8
    ray.kill(actor)


def test_exhausted_retries_fail_only_that_problem(local_ray):
    pool = EnginePool.launch(ActorSpec(backend=FLAKY, num_cpus=0.5), 2, PoolConfig(max_retries=2))
    try:
        ps = prompts(6, seed=4)
        ps["p2"] = ps["p2"].replace("<|assistant|>", f"{POISON}<|assistant|>")
        reported: dict[str, str] = {}
        outcome = run_programs_async(programs(ps), pool, on_failed=reported.__setitem__)
        assert set(outcome.failed) == set(reported) == {"p2"}
        assert "after 3 attempts" in outcome.failed["p2"] and "poisoned" in outcome.failed["p2"]
        assert set(outcome.results) == set(ps) - {"p2"}
        with pytest.raises(GenerationFailed):
            pool.generate([GenRequest("x", ps["p2"], group="p2")])
    finally:
        pool.shutdown()
