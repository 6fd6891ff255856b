"""Backend registry: a name → a factory that builds an ``Engine`` from a plain config dict.

Factories import their backend lazily, so a CPU-only machine can load this module (and a Ray actor can be
told "vllm") without vLLM or torch being importable until an engine is actually built. A name of the form
``"package.module:callable"`` builds an engine from any importable factory (plugins, test fakes): it must
resolve inside the Ray worker too, which is why a name travels to actors instead of a pickled object.

Example:
    >>> engine = build_engine("sim", {"seed": 0})  # doctest: +SKIP
    >>> engine.generate([GenRequest("k", "1+1=")])  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from cluster.engine import Engine

EngineFactory = Callable[[dict[str, Any]], Engine]


def _transformers(config: dict[str, Any]) -> Engine:
    from cluster.transformers_engine import TransformersEngine

    return TransformersEngine(**config)


def _sim(config: dict[str, Any]) -> Engine:
    from cluster.sim_engine import ContinuousSimEngine, SimConfig, SimEngine

    cfg = SimConfig(**config)
    return ContinuousSimEngine(cfg) if cfg.continuous else SimEngine(cfg)


def _vllm(config: dict[str, Any]) -> Engine:
    from cluster.vllm_engine import VLLMConfig, VLLMEngine

    return VLLMEngine(VLLMConfig(**config))


def _openai(config: dict[str, Any]) -> Engine:
    from cluster.openai_engine import OpenAIConfig, OpenAIEngine

    return OpenAIEngine(OpenAIConfig(**config))


BACKENDS: dict[str, EngineFactory] = {
    "transformers": _transformers,
    "sim": _sim,
    "vllm": _vllm,
    "openai": _openai,
}


def resolve_backend(name: str) -> EngineFactory:
    """The factory registered under ``name``, or the callable at ``"module:attr"``."""
    if name in BACKENDS:
        return BACKENDS[name]
    module, sep, attr = name.partition(":")
    if not sep:
        raise KeyError(f"unknown engine backend {name!r}; known: {sorted(BACKENDS)} or 'module:callable'")
    return getattr(importlib.import_module(module), attr)


def build_engine(name: str, config: dict[str, Any] | None = None) -> Engine:
    """Build the engine ``name`` from ``config`` (keyword arguments of that backend's config)."""
    return resolve_backend(name)(dict(config or {}))
