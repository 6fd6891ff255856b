"""The ground floor: the problems (``cluster/problems/``) and where generation runs: engine backends, the Ray
actors hosting them, routing, retries and the engine monitor."""
