"""The one engine interface every backend implements.

Only these plain dataclasses cross the engine boundary (as in vLLM v1: request structs in, output structs
out), so a backend can run in-process, inside a Ray actor, or behind HTTP without the search code knowing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

FINISH_STOP = "stop"  # a stop string ended the sample (its text is kept in the output)
FINISH_EOS = "eos"  # the model ended the sequence
FINISH_LENGTH = "length"  # max_new_tokens was reached
FINISH_REASONS = (FINISH_STOP, FINISH_EOS, FINISH_LENGTH)


@dataclass(frozen=True)
class GenRequest:
    """One prompt (+ optional assistant prefix) to continue, sampled ``n`` times.

    ``prompt`` is the chat-templated conversation ending where the assistant turn starts; ``prefix`` is the
    partial solution the assistant has already written. Engines tokenize them separately and concatenate the
    ids, so the same prefix text always maps to the same tokens and a rollout continues exactly that text.
    """

    request_key: str  # deterministic id: retries reproduce the same sample, duplicates are dropped
    prompt: str
    prefix: str = ""
    n: int = 1
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()  # generation ends after the first of these; the stop text is kept in output
    temperature: float = 0.8
    top_p: float = 1.0
    seed: int = 0  # sample i of this request uses seed + i
    group: str = ""  # routing key (the problem id): one group's requests go to one engine's prefix cache


@dataclass
class Sample:
    text: str  # generated text only (not the prompt or prefix); includes the matched stop string
    token_ids: list[int]
    finish_reason: str  # FINISH_STOP (stop string), FINISH_EOS (end of sequence) or FINISH_LENGTH


@dataclass
class GenResult:
    request_key: str
    samples: list[Sample]
    prompt_tokens: int  # prompt + prefix tokens, counted once per request
    completion_tokens: int  # summed over samples
    cached_tokens: int = 0  # prompt tokens served from a cache (shared prefix, vLLM prefix cache)
    engine_id: str = ""
    extra: dict = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    """A generation backend. ``generate`` returns one result per request, in request order."""

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str: ...

    def generate(self, requests: list[GenRequest]) -> list[GenResult]: ...


def request_key(*parts: object) -> str:
    """Stable 16-hex-digit key from its parts (node id, rollout index, seed, ...)."""
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:16]


def seed_for(key: str, base_seed: int) -> int:
    """A per-request seed derived from its key, so a retried request samples exactly the same text."""
    return (int(key[:8], 16) * 1009 + base_seed) % (2**31 - 1)
