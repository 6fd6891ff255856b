"""Engine-side request processing that every backend shares: encode a request, watch for stop strings, count usage.

Why one module: prompt + prefix encoding, the stop-string check and token counting used to be written inside
each backend, and they must agree exactly — the same prefix text has to map to the same ids on every backend
(a rollout continues exactly the text the search saw), a stop string ends a sample on the same character, and
``completion_tokens`` means the same thing in every ``GenResult``. As in vLLM v1, one input processor
tokenizes for every engine and stop strings are checked incrementally on the new characters only.

Example:
    >>> checker = StopChecker(("\\n\\n",))
    >>> [checker.feed(piece) for piece in ("Step 1", ".\\n", "\\nStep 2")]
    [None, None, 9]
    >>> Usage().add(GenResult("k", [], prompt_tokens=7, completion_tokens=3)).prompt_tokens
    7
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cluster.engine import GenRequest, GenResult, Sample

ENCODE_CACHE_TEXTS = 4096  # distinct prompt / prefix texts whose ids are remembered (a problem's prompt repeats)


class PromptEncoder:
    """Prompt ids + prefix ids, tokenized separately, so the same prefix text always maps to the same ids.

    Special tokens (BOS) are added to the prompt unless the chat template already wrote the BOS text; the
    prefix never gets them. Texts are memoized: a problem's prompt is encoded once for all its requests.
    """

    def __init__(self, tokenizer: Any, cache_texts: int = ENCODE_CACHE_TEXTS) -> None:
        self.tokenizer = tokenizer
        self._encode = lru_cache(maxsize=cache_texts)(self._encode_text)

    def _encode_text(self, text: str, special: bool) -> tuple[int, ...]:
        return tuple(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def __call__(self, request: GenRequest) -> list[int]:
        bos = self.tokenizer.bos_token
        ids = list(self._encode(request.prompt, not (bos and request.prompt.startswith(bos))))
        if request.prefix:
            ids += self._encode(request.prefix, False)
        if not ids:
            raise ValueError(f"request {request.request_key}: empty prompt and prefix")
        return ids


class StopChecker:
    """Finds the first stop string in a text that grows piece by piece, searching only where it can newly end.

    ``feed`` returns the end (exclusive) of the stop string that ends earliest in the text so far, or None:
    the text up to there is the sample's output. Empty stop strings are ignored.
    """

    def __init__(self, stops: tuple[str, ...] | list[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._overlap = max(map(len, self.stops), default=1) - 1  # a match may start this far back
        self.text = ""

    def feed(self, piece: str) -> int | None:
        start = max(0, len(self.text) - self._overlap)
        self.text += piece
        return first_stop_end(self.text, self.stops, start)


def first_stop_end(text: str, stops: tuple[str, ...], start: int = 0) -> int | None:
    """End (exclusive) of the stop string that ends first in ``text[start:]``, or None if none occurs."""
    ends = [i + len(s) for s in stops if s and (i := text.find(s, start)) >= 0]
    return min(ends) if ends else None


class TextStream:
    """Incremental detokenization: ``push`` a token, get only the text it adds (vLLM's offsets scheme).

    The tokens of the previous piece are decoded again with each new one, so a tokenizer that joins words
    (leading spaces) gives the same text as decoding all ids at once; a piece ending in an incomplete UTF-8
    character (``\\ufffd``) is held back until a later token completes it. The cost per token stays constant,
    where decoding the whole sample per token grows with its length.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self._prefix = 0  # start of the re-decoded context
        self._read = 0  # ids before this have been turned into text

    def push(self, token: int) -> str:
        self.ids.append(token)
        decode = self.tokenizer.decode
        before = decode(self.ids[self._prefix : self._read])
        after = decode(self.ids[self._prefix :])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        self._prefix, self._read = self._read, len(self.ids)
        return after[len(before) :]


@dataclass
class Usage:
    """Token usage summed over results: the one counter engine actors, the pool and the run summary keep.

    Each of them counts results with ``add`` (or sums other counters with ``merge``), so ``completion_tokens``
    means the same in every figure: the tokens of every sample of a result, once per result.
    """

    requests: int = 0
    prompt_tokens: int = 0  # prompt + prefix tokens, once per request
    cached_tokens: int = 0  # of those, served from a cache
    completion_tokens: int = 0  # generated tokens over all samples

    def add(self, result: GenResult) -> Usage:
        self.requests += 1
        self.prompt_tokens += result.prompt_tokens
        self.cached_tokens += result.cached_tokens
        self.completion_tokens += result.completion_tokens
        return self

    def merge(self, other: Usage) -> Usage:
        """Add another counter's totals (another actor's, another worker's)."""
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.cached_tokens += other.cached_tokens
        self.completion_tokens += other.completion_tokens
        return self

    @property
    def prefix_hit_rate(self) -> float:
        """Cached prompt tokens / prompt tokens."""
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


def make_result(request: GenRequest, samples: list[Sample], prompt_tokens: int, cached_tokens: int = 0,
                engine_id: str = "") -> GenResult:
    """The ``GenResult`` of ``request``: ``completion_tokens`` counted the one way, summed over its samples."""
    return GenResult(request.request_key, samples, prompt_tokens=prompt_tokens,
                     completion_tokens=sum(len(s.token_ids) for s in samples), cached_tokens=cached_tokens,
                     engine_id=engine_id)
