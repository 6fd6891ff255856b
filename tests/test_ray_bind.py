"""A local run's Ray listens on loopback only: every socket its processes listen on is 127.0.0.1 or ::1.

The Ray is started the way ``tracemill run`` starts it (``cluster.ray_session.connect_ray``) and given the
run's work (two sim engine actors answering requests), so the GCS, the raylet, its agents and the worker
processes are all up; then the listening TCP sockets of every process it started are listed with psutil.
"""

from __future__ import annotations

import ipaddress
import os

import psutil
import pytest
import ray

from cluster.actors import ActorSpec
from cluster.engine import GenRequest
from cluster.pool import EnginePool
from cluster.ray_session import connect_ray

pytestmark = pytest.mark.slow


def listeners(root_pid: int) -> list[tuple[str, str, int]]:
    """``(process name, ip, port)`` of every listening TCP socket of ``root_pid`` and its descendants."""
    root = psutil.Process(root_pid)
    found = []
    for proc in [root, *root.children(recursive=True)]:
        try:
            conns = proc.net_connections(kind="inet")
            name = proc.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        found += [(name, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    return found


def is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:127.0.0.1: an IPv6 socket bound to IPv4 loopback
    return (mapped or addr).is_loopback


def test_loopback_recognises_the_addresses_ray_binds_to():
    assert all(map(is_loopback, ["127.0.0.1", "::1", "::ffff:127.0.0.1"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.0.2.2", "::ffff:192.0.2.2"]))


def test_a_local_run_ray_listens_only_on_loopback():
    assert not ray.is_initialized()
    assert connect_ray("", 2) is True  # started here, as a run without ray.address starts it
    pool = EnginePool.launch(ActorSpec(backend="sim", num_cpus=0.5), 2)
    try:
        pool.generate([GenRequest(f"k{i}", "What is 1 + 1?", group=f"p{i}") for i in range(8)])
        assert ray.get_runtime_context().get_node_id()
        assert ray.nodes()[0]["NodeManagerAddress"] == "127.0.0.1"
        found = listeners(os.getpid())
    finally:
        pool.shutdown()
        ray.shutdown()
    names = {name for name, _, _ in found}
    # the servers that were listening on every interface before: GCS, raylet, agents, the workers (engines)
    assert {"gcs_server", "raylet"} <= names and any("EngineActor" in n for n in names), found
    assert len(found) >= 6, found
    assert [s for s in found if not is_loopback(s[1])] == []
