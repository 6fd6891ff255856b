"""Starting or joining Ray for a job: a local Ray binds to loopback only; a cluster is joined where it runs.

Every job of tracemill (``run``, ``label``, ``search``) connects the same way, so this sits with the Ray
actors it serves.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from urllib.parse import urlsplit

import ray
from ray._private import ray_constants

LOOPBACK = "127.0.0.1"


def connect_ray(address: str, num_cpus: int | None) -> bool:
    """Join ``address`` (or the cluster a Ray job runs in), else start a local Ray bound to loopback.

    A local Ray serves this process only, so none of its servers listens beyond 127.0.0.1: its node IP is
    the loopback address (Ray's GCS, raylet, agents and workers then bind to it) and there is no dashboard.
    Opening a cluster to the network is a deliberate ``ray start --head --node-ip-address ...`` plus
    ``ray.address`` (README, "Running on a cluster"). Returns True when this call started a local Ray (the
    caller shuts it down).
    """
    if ray.is_initialized():
        return False
    if address or os.environ.get("RAY_ADDRESS"):
        # a head on this machine bound to loopback (`ray start --node-ip-address 127.0.0.1`) is joined there
        loopback = _is_loopback_address(address or os.environ["RAY_ADDRESS"])
        with _loopback_node_ip() if loopback else nullcontext():
            ray.init(address=address or None, log_to_driver=False, configure_logging=False)
        return False
    # "local" starts a fresh Ray even when another one runs on this machine (None would join that one)
    with _loopback_node_ip():
        ray.init(address="local", include_dashboard=False, num_cpus=num_cpus, _node_ip_address=LOOPBACK,
                 log_to_driver=False, configure_logging=False)
    return True


def _is_loopback_address(address: str) -> bool:
    """``127.0.0.1:6379``, ``ray://localhost:10001``: a cluster address on this machine's loopback."""
    host = urlsplit(address if "://" in address else f"//{address}").hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name, or "auto"
        return False


@contextmanager
def _loopback_node_ip() -> Iterator[None]:
    """Let ``ray.init(_node_ip_address="127.0.0.1")`` keep the loopback address.

    Ray (2.60) swaps a loopback node IP, or a loopback cluster address, for the machine's routable IP unless
    Ray "clusters" are disabled (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read once at import into
    ``ray_constants.ENABLE_RAY_CLUSTER``), and its servers bind to all interfaces unless the node IP is
    127.0.0.1. The flag is set for this one ``ray.init`` only, so joining a real cluster later in the
    process is unaffected.
    """
    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before
