"""Backend registry: a name → the backend's config dataclass and the function that builds its ``Engine``.

The config dataclass is the one list of what a backend accepts: ``build_engine`` constructs it from a plain
dict (unknown keys and bad values fail there), and the run config (``pipelines.config``) derives the keys of
``engine.options`` from its fields. The modules imported here are light: torch and vLLM are imported only
when an engine is built (vLLM inside ``VLLMEngine``, torch with ``cluster.transformers_engine``), so a
CPU-only machine can load this module (and a Ray actor can be told "vllm") without either being importable.

A name of the form ``"package.module:callable"`` (``PLUGIN_PATTERN``) builds an engine from any importable
factory taking the options dict (plugins, test fakes); the factory validates its own options. It must resolve
inside the Ray worker too, which is why a name travels to actors instead of a pickled object.

Example:
    >>> engine = build_engine("sim", {"seed": 0})  # doctest: +SKIP
    >>> engine.generate([GenRequest("k", "1+1=")])  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cluster.engine import Engine
from cluster.openai_engine import OpenAIConfig, OpenAIEngine
from cluster.sim_engine import ContinuousSimEngine, SimConfig, SimEngine
from cluster.transformers_config import TransformersConfig
from cluster.vllm_engine import VLLMConfig, VLLMEngine

EngineFactory = Callable[[dict[str, Any]], Engine]
PLUGIN_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*"  # package.module:callable


@dataclass(frozen=True)
class Backend:
    """A registered backend: ``build(config(**options))`` is its engine."""

    config: type  # a frozen dataclass: its fields are every option the backend reads
    build: Callable[[Any], Engine]  # an instance of ``config`` -> the engine


def _transformers(config: TransformersConfig) -> Engine:
    from cluster.transformers_engine import TransformersEngine

    return TransformersEngine(config)


def _sim(config: SimConfig) -> Engine:
    return ContinuousSimEngine(config) if config.continuous else SimEngine(config)


BACKENDS: dict[str, Backend] = {
    "transformers": Backend(TransformersConfig, _transformers),
    "sim": Backend(SimConfig, _sim),
    "vllm": Backend(VLLMConfig, VLLMEngine),
    "openai": Backend(OpenAIConfig, OpenAIEngine),
}


def is_plugin_name(name: str) -> bool:
    """True for a ``"package.module:callable"`` name (its shape only: nothing is imported)."""
    return re.fullmatch(PLUGIN_PATTERN, name) is not None


def resolve_backend(name: str) -> EngineFactory:
    """The factory of the backend registered under ``name``, or the callable at ``"package.module:callable"``."""
    if name in BACKENDS:
        backend = BACKENDS[name]
        return lambda options: backend.build(backend.config(**options))
    if not is_plugin_name(name):
        raise KeyError(f"unknown engine backend {name!r}; known: {sorted(BACKENDS)} or 'package.module:callable'")
    module, _, attr = name.partition(":")
    return getattr(importlib.import_module(module), attr)


def build_engine(name: str, config: dict[str, Any] | None = None) -> Engine:
    """Build the engine ``name`` from ``config`` (keyword arguments of that backend's config)."""
    return resolve_backend(name)(dict(config or {}))
