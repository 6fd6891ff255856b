"""Where the shared evaluation data lives: ``shared/data`` beside the checkout (as in CI), else /work/shared."""

from __future__ import annotations

from pathlib import Path

_CANDIDATES = (Path(__file__).resolve().parents[2] / "shared" / "data", Path("/work/shared/data"))
DATA = next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[0])
