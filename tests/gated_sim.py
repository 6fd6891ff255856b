"""A sim engine the cluster tests can hold: calls carrying a listed question wait while a hold file exists.

It makes a fault land deterministically mid-run: the test lists the questions of the shards one search
worker holds, waits until another worker's shard is committed (those shards cannot be), kills the holder
(or removes its node), then deletes the file so the run goes on. The engine is async (``agenerate``), so a
held call waits without stopping the calls of other workers; a line ``*`` holds every call.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from cluster.engine import GenRequest, GenResult
from cluster.sim_engine import SimConfig, SimEngine

GATED = "tests.gated_sim:gated_sim"


class GatedSim(SimEngine):
    def __init__(self, config: SimConfig, hold: str) -> None:
        super().__init__(config)
        self._hold = Path(hold)

    async def agenerate(self, requests: list[GenRequest]) -> list[GenResult]:
        while self._held(requests):
            await asyncio.sleep(0.02)
        return self.generate(requests)

    def _held(self, requests: list[GenRequest]) -> bool:
        try:
            marks = [m for m in self._hold.read_text().splitlines() if m]
        except FileNotFoundError:
            return False
        return any(m == "*" or m in req.prompt for req in requests for m in marks)


def gated_sim(config: dict[str, Any]) -> GatedSim:
    options = dict(config)
    hold = options.pop("hold")
    return GatedSim(SimConfig(**options), hold)
