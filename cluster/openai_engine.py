"""``openai``: an already running OpenAI-compatible completions server (vLLM, SGLang, llama.cpp) as an engine.

Each ``GenRequest`` becomes one ``POST {base_url}/completions`` (or ``n`` of them with ``split_n``, for servers
without ``n > 1``), sent from a thread pool bounded by ``max_concurrency``. The pool is shared by concurrent
``agenerate`` calls, which an engine actor awaits directly (as for vLLM): the server batches whatever is in
flight, and no call waits behind another's slowest request. Transient failures (connection errors, timeouts,
HTTP 408/429/5xx) are retried with exponential backoff; other HTTP errors fail at once with the server's
message. Only the standard library is used (``httpx`` is not a dependency).

Why the stop string needs work: servers drop the matched stop string from the text, while the ``Engine``
contract keeps it, so a child node's prefix ends with its step delimiter. vLLM reports the matched string as
``stop_reason`` and SGLang as ``matched_stop``; it is re-appended. A server that reports neither leaves "EOS or
stop string?" open: an EOS is recognised from the last token id where a local tokenizer is configured, and
otherwise a ``"stop"`` finish of a request with stop strings is taken as its stop string — exact for the one
stop string search requests use (the step delimiter), a guess (the first) when a request has several.

Token ids of completions come from the server (``token_ids``: ask vLLM with ``return_token_ids``; ``tokens``:
llama.cpp) or, failing that, from the local tokenizer. The prompt goes as text (``prompt + prefix``) or, with
``send_token_ids``, as prompt ids + prefix ids tokenized separately by ``cluster.requests.PromptEncoder``, so a
prefix always maps to the same tokens (as in the vLLM and transformers backends).

Example::

    engine = OpenAIEngine(OpenAIConfig(base_url="http://localhost:8000/v1", model="Qwen/Qwen2.5-0.5B-Instruct",
                                       tokenizer="/models/qwen2.5-0.5b-instruct"))
    engine.generate([GenRequest("k", engine.apply_chat_template([{"role": "user", "content": "2+2?"}]))])
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from cluster.engine import FINISH_EOS, FINISH_LENGTH, FINISH_STOP, GenRequest, GenResult, Sample
from cluster.requests import PromptEncoder, make_result

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})  # worth another try: overload or a restarting server
STOP_FIELDS = ("stop_reason", "matched_stop")  # where vLLM / SGLang name the stop string that matched
TOKEN_FIELDS = ("token_ids", "tokens")  # where vLLM / llama.cpp put completion token ids


class EngineHTTPError(RuntimeError):
    """The server failed a request for good (a non-retryable status, or retries used up)."""


@dataclass(frozen=True)
class OpenAIConfig:
    """Unknown keys fail at construction. A chat template or a tokenizer folder is required."""

    base_url: str  # up to and including the API version, e.g. "http://localhost:8000/v1"
    model: str = ""  # the served model name; "" omits it (llama.cpp serves one model)
    api_key: str = ""  # sent as "Authorization: Bearer <key>" when set
    chat_template: str = ""  # a Jinja2 chat template (as in tokenizer_config.json) used by apply_chat_template
    tokenizer: str = ""  # a local tokenizer folder: its chat template, EOS id, and ids where the server sends none
    send_token_ids: bool = False  # send prompt + prefix as token ids (needs tokenizer)
    split_n: bool = False  # send n requests with n = 1 and seeds seed + i (servers that ignore n)
    max_concurrency: int = 16  # HTTP requests in flight per engine
    timeout_s: float = 120.0  # per HTTP call: connecting, and each wait for response bytes
    max_retries: int = 3  # extra tries after a transient failure
    backoff_s: float = 0.5  # first wait before a retry; doubles each time
    max_backoff_s: float = 8.0
    extra_body: dict[str, Any] = field(default_factory=lambda: {"return_token_ids": True})  # vLLM extension
    engine_id: str = "openai"

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {self.base_url!r}")
        if not (self.chat_template or self.tokenizer):
            raise ValueError("set chat_template (a Jinja2 template string) or tokenizer (a local folder)")
        if self.send_token_ids and not self.tokenizer:
            raise ValueError("send_token_ids needs tokenizer")
        if self.max_concurrency < 1 or self.max_retries < 0 or self.timeout_s <= 0 or self.backoff_s < 0:
            raise ValueError("max_concurrency >= 1, max_retries >= 0, timeout_s > 0 and backoff_s >= 0 required")


class OpenAIEngine:
    """The ``Engine`` protocol over HTTP; deterministic when the server is (fixed seed, fixed batch)."""

    def __init__(self, config: OpenAIConfig) -> None:
        self.config = config
        self.url = config.base_url.rstrip("/") + "/completions"
        self.tokenizer = _load_tokenizer(config.tokenizer) if config.tokenizer else None
        self._encode = PromptEncoder(self.tokenizer) if self.tokenizer is not None else None
        self._template = _compile_template(config.chat_template) if config.chat_template else None
        self._pool = ThreadPoolExecutor(config.max_concurrency, thread_name_prefix="openai-engine")

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str:
        if self._template is not None:
            return self._template.render(messages=messages, add_generation_prompt=True, **self._special_tokens())
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        bodies = [self._bodies(req) for req in requests]
        responses = iter(list(self._pool.map(self._post, [body for group in bodies for body in group])))
        return [self._result(req, [next(responses) for _ in group]) for req, group in zip(requests, bodies, strict=True)]

    async def agenerate(self, requests: list[GenRequest]) -> list[GenResult]:
        """``generate`` for an event loop: an actor awaits it directly, so concurrent calls share the HTTP pool
        (the server batches them) instead of queueing behind one another's slowest request."""
        bodies = [self._bodies(req) for req in requests]
        futures = [asyncio.wrap_future(self._pool.submit(self._post, body)) for group in bodies for body in group]
        responses = iter(await asyncio.gather(*futures))
        return [self._result(req, [next(responses) for _ in group]) for req, group in zip(requests, bodies, strict=True)]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _special_tokens(self) -> dict[str, str]:
        tok = self.tokenizer
        return {"bos_token": getattr(tok, "bos_token", None) or "", "eos_token": getattr(tok, "eos_token", None) or ""}

    def _bodies(self, req: GenRequest) -> list[dict[str, Any]]:
        """The JSON bodies of one request: one with ``n``, or ``n`` with one sample each and seeds seed + i."""
        cfg = self.config
        body: dict[str, Any] = {**cfg.extra_body, "prompt": self._prompt(req), "max_tokens": req.max_new_tokens,
                                "temperature": req.temperature, "top_p": req.top_p, "stop": list(req.stop)}
        if cfg.model:
            body["model"] = cfg.model
        if cfg.split_n:
            return [{**body, "n": 1, "seed": req.seed + i} for i in range(req.n)]
        return [{**body, "n": req.n, "seed": req.seed}]

    def _prompt(self, req: GenRequest) -> str | list[int]:
        return self._encode(req) if self.config.send_token_ids else req.prompt + req.prefix

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST with retries on transient failures; returns the decoded JSON response."""
        cfg = self.config
        headers = {"Content-Type": "application/json"}
        if cfg.api_key:
            headers["Authorization"] = f"Bearer {cfg.api_key}"
        data, attempt = json.dumps(body).encode(), 0
        while True:
            try:
                request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=cfg.timeout_s) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as err:
                detail = err.read()[:500].decode(errors="replace")
                if err.code not in RETRY_STATUS or attempt >= cfg.max_retries:
                    raise EngineHTTPError(f"{self.url}: HTTP {err.code} after {attempt + 1} tries: {detail}") from err
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:  # URLError: refused, DNS
                if attempt >= cfg.max_retries:
                    raise EngineHTTPError(f"{self.url}: {err} after {attempt + 1} tries") from err
            time.sleep(min(cfg.max_backoff_s, cfg.backoff_s * 2**attempt))
            attempt += 1

    def _result(self, req: GenRequest, responses: list[dict[str, Any]]) -> GenResult:
        choices = [c for r in responses for c in sorted(r["choices"], key=lambda c: c.get("index", 0))]
        samples = [self._sample(req, c) for c in choices]
        usage = [r.get("usage") or {} for r in responses]
        prompt_tokens = usage[0].get("prompt_tokens") or 0  # counted once, also when split_n sent n calls
        cached = (usage[0].get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        return make_result(req, samples, prompt_tokens, cached, self.config.engine_id)

    def _sample(self, req: GenRequest, choice: dict[str, Any]) -> Sample:
        text = choice.get("text") or ""
        ids = next((list(choice[f]) for f in TOKEN_FIELDS if isinstance(choice.get(f), list)), None)
        if ids is None:
            if self.tokenizer is None:
                raise EngineHTTPError(f"{self.url} returned no completion token ids: configure a tokenizer folder "
                                      "or ask the server for them (vLLM: extra_body return_token_ids)")
            ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if choice.get("finish_reason") == FINISH_LENGTH:  # the OpenAI API's word for it is ours too
            return Sample(text, ids, FINISH_LENGTH)
        stop = self._matched_stop(req, choice, ids)
        if stop is None:
            return Sample(text, ids, FINISH_EOS)
        return Sample(text if text.endswith(stop) else text + stop, ids, FINISH_STOP)

    def _matched_stop(self, req: GenRequest, choice: dict[str, Any], ids: list[int]) -> str | None:
        """The stop string that ended this choice, or None for an end of sequence (see the module docstring)."""
        for name in STOP_FIELDS:
            if name in choice:
                value = choice[name]
                return value if isinstance(value, str) and value in req.stop else None
        eos = getattr(self.tokenizer, "eos_token_id", None)
        if not req.stop or (eos is not None and ids and ids[-1] == eos):
            return None
        return req.stop[0]


def _load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def _compile_template(source: str) -> Any:
    """A chat template compiled the way transformers does (sandboxed Jinja2, trimmed blocks)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(source)
