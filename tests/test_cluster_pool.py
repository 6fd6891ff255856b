"""EnginePool and EngineActor on a single-node local Ray: routing, batching, dedupe, retries, the async driver."""

from __future__ import annotations

import pytest
import ray

from cluster.actors import ActorSpec, launch_actor
from cluster.backends import build_engine
from cluster.engine import GenRequest
from cluster.pool import EnginePool, GenerationFailed, HashRing, PoolConfig
from cluster.sim_engine import ContinuousSimEngine, SimConfig, SimEngine
from search.program import run_programs, run_programs_async
from tests.cluster_fixtures import FLAKY, POISON, programs, prompts


@pytest.fixture(scope="module")
def pool2(ray_cluster):
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


def test_overloaded_owner_spills_to_the_least_loaded_actor(ray_cluster):
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
    done: dict[str, list[str]] = {}
    outcome = run_programs_async(programs(ps), pool2, on_done=done.__setitem__, max_active=5)
    assert done == want and not outcome.failed
    assert outcome.results == {}  # results handed to on_done are not kept (a stream holds none)
    assert run_programs_async(programs(ps), pool2, max_active=5).results == want  # no on_done: kept


def test_actor_merges_concurrent_calls_into_one_engine_batch(ray_cluster):
    actor = launch_actor(ActorSpec(backend="sim", engine={"latency_s": 0.2}, num_cpus=0.5))
    p = next(iter(prompts(1).values()))
    refs = [actor.generate.remote([GenRequest(f"c{i}", p, seed=i)]) for i in range(8)]
    assert [r[0].request_key for r in ray.get(refs)] == [f"c{i}" for i in range(8)]
    stats = ray.get(actor.stats.remote())
    assert stats["calls"] == 8 and stats["requests"] == 8 and stats["batches"] < 8
    ray.kill(actor)


def test_continuous_sim_serves_concurrent_calls_unmerged_with_the_sims_own_results(ray_cluster):
    actor = launch_actor(ActorSpec(backend="sim", engine={"latency_s": 0.2, "continuous": True}, num_cpus=0.5))
    p = next(iter(prompts(1).values()))
    reqs = [GenRequest(f"c{i}", p, seed=i) for i in range(8)]
    results = ray.get([actor.generate.remote([r]) for r in reqs])
    assert [r[0].samples for r in results] == [r.samples for r in SimEngine().generate(reqs)]
    stats = ray.get(actor.stats.remote())
    assert stats["calls"] == 8 and stats["batches"] == 8  # awaited one by one, never merged into a batch
    ray.kill(actor)


def test_exhausted_retries_fail_only_that_problem(ray_cluster):
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


# ---- honest busy time: the union of in-flight intervals ------------------------------------------------------

ConcurrentSim = ContinuousSimEngine  # like vLLM it serves concurrent calls at once (each awaits its latency)


def concurrent_sim(config: dict) -> ConcurrentSim:
    return ConcurrentSim(SimConfig(**config))


def slow_start_sim(config: dict) -> SimEngine:
    """The sim engine, loading as slowly as a small vLLM engine does: a restart leaves a long gap."""
    import time

    time.sleep(config.pop("start_s"))
    return SimEngine(SimConfig(**config))


def test_union_of_intervals_counts_overlaps_once():
    from cluster.actors import union_length

    assert union_length([]) == 0.0
    assert union_length([(0, 3), (1, 4), (10, 11)]) == 5.0  # two overlapping calls, then one alone
    assert union_length([(1, 4), (0, 3), (2, 3), (3, 5)]) == 5.0  # nested, touching, unsorted
    assert union_length([(0, 10), (2, 3), (4, 5)]) == 10.0


def test_busy_clock_is_the_union_of_in_flight_calls_and_call_time_their_sum():
    from cluster.actors import BusyClock

    now = [0.0]
    clock = BusyClock(lambda: now[0])
    a = clock.enter()  # t=0
    now[0] = 1.0
    b = clock.enter()  # t=1, overlapping a
    now[0] = 3.0
    assert clock.exit(a) == 3.0
    assert clock.busy_s() == 3.0  # the open interval counts
    now[0] = 4.0
    assert clock.exit(b) == 3.0
    now[0] = 10.0
    c = clock.enter()
    now[0] = 11.0
    assert clock.exit(c) == 1.0
    now[0] = 20.0
    assert clock.busy_s() == 5.0 == union_of([(0, 3), (1, 4), (10, 11)])


def union_of(intervals):
    from cluster.actors import union_length

    return union_length(intervals)


def test_actor_counts_concurrent_async_calls_once_in_busy_time():
    """In process (no Ray): two overlapping calls into an async engine, then one alone, on a fake clock."""
    import asyncio

    from cluster.actors import BusyClock, EngineActor

    now = [0.0]
    gates: dict[str, asyncio.Event] = {}

    class Gated(ConcurrentSim):
        async def agenerate(self, requests):
            gates[requests[0].request_key] = gate = asyncio.Event()
            await gate.wait()
            return [self._one(req) for req in requests]

    actor = EngineActor(ActorSpec(backend="sim"), "engine-0")
    actor._engine = Gated()
    actor._busy = BusyClock(lambda: now[0])
    prompt = prompts(1)["p0"]

    async def scenario():
        async def call(key):
            return await actor.generate([GenRequest(key, prompt, n=1, max_new_tokens=8)])

        async def at(t, key=None):
            while key is not None and key not in gates:
                await asyncio.sleep(0)
            now[0] = t
            if key is not None:
                gates[key].set()
                await asyncio.sleep(0)

        first = asyncio.create_task(call("a"))  # t=0
        await asyncio.sleep(0)
        now[0] = 1.0
        second = asyncio.create_task(call("b"))  # t=1
        await asyncio.sleep(0)
        await at(3.0, "a")
        await first
        await at(4.0, "b")
        await second
        now[0] = 10.0
        third = asyncio.create_task(call("c"))
        await asyncio.sleep(0)
        await at(11.0, "c")
        await third

    asyncio.run(scenario())
    assert actor._busy.busy_s() == 5.0  # union: [0, 4] and [10, 11]
    assert actor._counters.call_s == 7.0  # per-call sum: 3 + 3 + 1
    assert actor._counters.calls == 3 and actor._counters.usage.requests == 3


def test_pool_actor_busy_time_stays_within_the_wall_clock_when_calls_overlap(ray_cluster):
    """A concurrently serving engine: every request its own call, so calls overlap inside the actor; busy
    time (the union) never exceeds the wall time of the run, while the per-call sum does."""
    import time

    pool = EnginePool.launch(ActorSpec(backend="tests.test_cluster_pool:concurrent_sim",
                                       engine={"latency_s": 0.05}, num_cpus=0.5), 1,
                             PoolConfig(max_call_requests=1))
    try:
        ps = prompts(12, seed=5)
        start = time.perf_counter()
        outcome = run_programs_async(programs(ps, depth=3), pool, max_active=12)
        wall = time.perf_counter() - start
        assert not outcome.failed
        [stats] = pool.actor_stats()
        assert stats["calls"] > 12
        assert 0 < stats["engine_s"] <= wall
        assert stats["call_s"] > stats["engine_s"]  # the calls did overlap, and were not double counted
    finally:
        pool.shutdown()


def test_the_only_actor_killed_mid_run_parks_requests_until_it_is_back(ray_cluster):
    """With one engine there is nowhere to resubmit: requests wait for Ray's restart instead of spending
    every attempt on the restarting actor (a vLLM engine takes tens of seconds to come back)."""
    pool = EnginePool.launch(ActorSpec(backend="tests.test_cluster_pool:slow_start_sim",
                                       engine={"latency_s": 0.05, "start_s": 3.0}, num_cpus=0.5), 1,
                             PoolConfig(max_retries=2, probe_interval_s=0.1))
    try:
        ps = prompts(8, seed=3)
        done: dict[str, list[str]] = {}
        flush = pool._flush

        def flush_then_kill():  # the kill hits calls in flight, once the first round has been answered
            flush()
            if pool.stats()["usage"].requests >= 8 and pool._calls and not killed:
                killed.append(True)
                ray.kill(pool.actors[0], no_restart=False)

        killed: list[bool] = []
        pool._flush = flush_then_kill
        outcome = run_programs_async(programs(ps, depth=3), pool, on_done=done.__setitem__, max_active=8)
        assert killed
        assert not outcome.failed
        assert done == run_programs(dict(programs(ps, depth=3)), SimEngine(SimConfig()).generate)
        assert pool.stats()["retried"] > 0
    finally:
        pool.shutdown()
