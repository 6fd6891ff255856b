"""The ``transformers`` backend's config, in a module of its own so reading it imports neither torch nor transformers.

``cluster.transformers_engine`` needs torch at import time; the run config (``pipelines.config``) derives the
keys ``engine.options`` accepts for this backend from these fields, and parsing a config must stay cheap.

Example:
    >>> TransformersConfig("smollm2-135m-instruct", max_batch_size=32).dtype
    'float32'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Dtype = Literal["float32", "bfloat16", "float16"]  # weight dtypes the engine loads (torch dtypes of the same name)
DTYPES: tuple[str, ...] = get_args(Dtype)


@dataclass(frozen=True)
class TransformersConfig:
    """Unknown keys fail at construction; see ``cluster.transformers_engine`` for what each one changes."""

    model: str  # a registered name (cluster.models) or a local HF folder
    device: str = "cpu"  # a torch device: "cpu", "cuda", "cuda:1"
    dtype: Dtype = "float32"
    max_batch_size: int = 16  # sample rows decoded together; bounds KV-cache memory
    share_prefix: bool = True  # prefill a request's context once for all its n samples
    num_threads: int | None = None  # torch CPU threads; None keeps the process setting (Ray: num_cpus)
    engine_id: str = ""  # "" names the engine "transformers:<model>"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose from {sorted(DTYPES)}")
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError("num_threads must be >= 1")
