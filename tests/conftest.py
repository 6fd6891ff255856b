"""Fixtures shared by every test module: the tiny model, one torch thread, and the one Ray cluster fixture.

Helpers that tests call directly stay plain importable modules (``tests.tiny_model`` builds the tiny model,
``tests.labeling_fixtures`` holds the fake labeling engine, ``tests.cluster_fixtures`` the flaky sim engine and
step programs); only pytest fixtures live here, so no test module imports or re-exports a fixture.

Ray: ``ray_cluster`` starts a private local cluster bound to 127.0.0.1 for one test module (never joining
another Ray on this machine) and shuts it down afterwards. Its shape comes from the module's marker, e.g.
``pytestmark = pytest.mark.ray_cluster(workers=2)`` for fault tests that remove nodes; without a marker it is
a single 2-CPU head.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.tiny_model import build_tiny_model_dir

HEAD_CPUS = 2  # a lone head runs a few 0.5-CPU sim actors
NODE_CPUS = 1  # head and each worker when a module asks for worker nodes


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ray_cluster(workers=0): shape of the module's local Ray cluster")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder holding the tiny random Llama and its character tokenizer, built once per test session."""
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads; on shared cores the extra threads spin-wait (10-40x slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ray_cluster(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A private local Ray cluster for the module (see the module docstring); yields ``ray.cluster_utils.Cluster``.

    With ``workers > 0`` each node has one CPU, so where an actor runs is decided by the test, and
    ``cluster.worker_nodes`` lists the nodes a test may remove.
    """
    import ray
    from ray.cluster_utils import Cluster

    marker = request.node.get_closest_marker("ray_cluster")
    workers = marker.kwargs.get("workers", 0) if marker else 0
    head_cpus = NODE_CPUS if workers else HEAD_CPUS
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": head_cpus, "include_dashboard": False})
    for _ in range(workers):
        cluster.add_node(num_cpus=NODE_CPUS)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
