"""The ``transformers`` engine backend: batched sampling on CPU or GPU with a shared-prefix KV cache.

Why our own decoding loop instead of ``model.generate``: rollouts sample n continuations of one long
prompt + prefix. ``generate(num_return_sequences=n)`` copies the input n times and prefills all copies;
here the context is prefilled ONCE into a ``DynamicCache`` that is then expanded to the n sample rows.
Requests are also batched together (left padding, attention mask, per-row position ids), each sample has
its own random stream, and stop strings end a sample as soon as they appear (checked on the new text of each
token only, through ``cluster.requests``, which also encodes prompt + prefix the way every backend does).

Reproducibility: sample i of a request draws all its randomness from ``torch.Generator`` seeded ``seed + i``
(one uniform per generated token, turned into a token by inverse-CDF sampling), so which other requests or
samples share its batch never changes its random numbers. What can still differ between batch compositions
is floating point: batch size and left padding change reduction order in the last bits of the logits, which
flips a token only when a uniform lands exactly on a probability boundary (or at a greedy near-tie). The
same requests in the same batches are bit-for-bit reproducible on one machine.

Example:
    >>> engine = TransformersEngine(TransformersConfig("smollm2-135m-instruct"))  # doctest: +SKIP
    >>> prompt = engine.apply_chat_template([{"role": "user", "content": "What is 2+3?"}])  # doctest: +SKIP
    >>> engine.generate([GenRequest("k", prompt, n=4, stop=("\\n\\n",))])[0].samples[0].text  # doctest: +SKIP
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache
from transformers.cache_utils import DynamicLayer

from cluster.engine import FINISH_EOS, FINISH_LENGTH, FINISH_STOP, GenRequest, GenResult, Sample
from cluster.models import resolve_model
from cluster.requests import PromptEncoder, StopChecker, TextStream, first_stop_end, make_result
from cluster.transformers_config import DTYPES, TransformersConfig

TORCH_DTYPES = {name: getattr(torch, name) for name in DTYPES}
NUCLEUS_CANDIDATES = 512  # top-k searched for the top-p nucleus before falling back to a full sort


class _GrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` that appends into spare capacity instead of re-concatenating every step.

    ``DynamicLayer.update`` copies the whole layer cache per decoded token (``torch.cat``), ~10% of a CPU
    decode step at 256 context tokens. Here ``keys``/``values`` are views into buffers that grow by
    doubling. Inherited methods that replace ``keys`` (``batch_select_indices``, ``crop``) are safe: the
    next update notices the views no longer point into the buffers and adopts the new tensors.
    """

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        used, new = self.get_seq_length(), key_states.shape[-2]
        buffers = getattr(self, "_spare", None)
        adopted = buffers is not None and used and self.keys.data_ptr() == buffers[0].data_ptr()
        if not adopted or used + new > buffers[0].shape[-2]:
            shape = (*key_states.shape[:-2], 2 * (used + new), key_states.shape[-1])
            buffers = (key_states.new_empty(shape), value_states.new_empty(shape))
            if used:
                buffers[0][..., :used, :] = self.keys
                buffers[1][..., :used, :] = self.values
            self._spare = buffers
        buffers[0][..., used : used + new, :] = key_states
        buffers[1][..., used : used + new, :] = value_states
        self.keys, self.values = buffers[0][..., : used + new, :], buffers[1][..., : used + new, :]
        return self.keys, self.values


def _growing_cache(config) -> DynamicCache:
    """A ``DynamicCache`` for ``config`` whose full-attention layers grow in place (see ``_GrowingLayer``)."""
    cache = DynamicCache(config=config)
    cache.layers = [_GrowingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


@dataclass(frozen=True)
class _Item:
    """Samples ``first .. first+count-1`` of request ``req``, decoded together in one batch."""

    req: int  # index into the request list
    first: int  # index of the first sample (its seed is request.seed + first)
    count: int
    ids: list[int]  # prompt + prefix token ids


@dataclass
class _Row:
    """One sample being decoded."""

    request: GenRequest
    item: int  # index of its _Item in the batch
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str = ""
    stops: StopChecker | None = None  # None: the request has no stop strings
    stream: TextStream | None = None  # the new text of each token, for the stop check


@dataclass
class _Batch:
    """The running decode batch: the KV cache and per-row tensors, aligned with ``active`` (row indices)."""

    cache: DynamicCache
    mask: torch.Tensor  # (rows, cache length) attention mask; left padding is 0
    active: list[int]
    next_ids: torch.Tensor
    positions: torch.Tensor
    temperature: torch.Tensor
    top_p: torch.Tensor
    uniforms: torch.Tensor  # (rows, max_new_tokens) each row's own random stream

    def select(self, index: torch.Tensor) -> None:
        self.cache.batch_select_indices(index)
        for name in ("mask", "next_ids", "positions", "temperature", "top_p", "uniforms"):
            setattr(self, name, getattr(self, name)[index])

    def merge(self, other: _Batch) -> _Batch:
        """Rows of both batches in one: caches and masks left-padded to the longer cache, then stacked."""
        width = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            keys = torch.cat([_left_pad(mine.keys, width), _left_pad(theirs.keys, width)])
            values = torch.cat([_left_pad(mine.values, width), _left_pad(theirs.values, width)])
            mine.keys, mine.values = keys, values  # the growing layer adopts new tensors on its next update
        steps = max(self.uniforms.shape[1], other.uniforms.shape[1])
        return _Batch(
            cache=self.cache,
            mask=torch.cat([_left_pad(self.mask, width, dim=1), _left_pad(other.mask, width, dim=1)]),
            active=self.active + other.active,
            next_ids=torch.cat([self.next_ids, other.next_ids]),
            positions=torch.cat([self.positions, other.positions]),
            temperature=torch.cat([self.temperature, other.temperature]),
            top_p=torch.cat([self.top_p, other.top_p]),
            uniforms=torch.cat([_right_fill(self.uniforms, steps), _right_fill(other.uniforms, steps)]),
        )


def _left_pad(t: torch.Tensor, width: int, dim: int = -2) -> torch.Tensor:
    """Zeros before ``t`` along ``dim`` up to ``width`` (cache: the sequence axis; mask: dim 1)."""
    missing = width - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _right_fill(t: torch.Tensor, width: int) -> torch.Tensor:
    """Uniform streams padded to ``width`` steps (rows never read past their own max_new_tokens)."""
    return t if t.shape[1] == width else torch.cat([t, t.new_full((t.shape[0], width - t.shape[1]), 0.5)], 1)


def _inverse_cdf(probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Token index per row whose cumulative probability first exceeds ``uniform`` (unnormalised probs ok)."""
    cdf = probs.cumsum(-1)
    target = (uniform * cdf[:, -1]).unsqueeze(-1)
    return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp_(max=probs.shape[-1] - 1)


def _nucleus(sorted_probs: torch.Tensor, order: torch.Tensor, top_p: torch.Tensor, uniform: torch.Tensor):
    """Sample among the most likely tokens (probs sorted descending) whose mass reaches ``top_p``."""
    mass_before = sorted_probs.cumsum(-1) - sorted_probs
    sorted_probs = sorted_probs.masked_fill(mass_before >= top_p.unsqueeze(-1), 0.0)  # the top token survives
    picked = _inverse_cdf(sorted_probs, uniform)
    return order.gather(-1, picked.unsqueeze(-1)).squeeze(-1)


def _inverse_cdf_top_p(probs: torch.Tensor, top_p: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Nucleus sampling; a top-k pass finds the nucleus cheaply, a full sort only where it is wider.

    Sorting a 50k vocabulary costs ~5 ms per row per step on CPU, as much as a decode step of a small model;
    the nucleus almost always lies within the top few hundred tokens. Whether a row needs the full sort
    depends only on its own probabilities, so the result is the same as sorting every row.
    """
    top_probs, top_order = probs.topk(min(NUCLEUS_CANDIDATES, probs.shape[-1]), dim=-1)
    wide = top_probs.sum(-1) < top_p
    if not wide.any():
        return _nucleus(top_probs, top_order, top_p, uniform)
    picked = torch.empty_like(top_p, dtype=torch.long)
    narrow = ~wide
    picked[narrow] = _nucleus(top_probs[narrow], top_order[narrow], top_p[narrow], uniform[narrow])
    sorted_probs, order = probs[wide].sort(-1, descending=True)
    picked[wide] = _nucleus(sorted_probs, order, top_p[wide], uniform[wide])
    return picked


def sample_tokens(
    logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, uniform: torch.Tensor
) -> torch.Tensor:
    """One next token per row: greedy where temperature == 0, else temperature + top-p sampling.

    Each row's choice depends only on its own logits, parameters and uniform draw (rows with top_p == 1
    skip the sort), so a sample is independent of what else is in the batch.
    """
    scale = torch.where(temperature > 0, temperature, 1.0)  # greedy rows: any finite scale, argmax is taken
    probs = torch.softmax(logits / scale.unsqueeze(-1), -1)
    nucleus = top_p < 1.0
    if nucleus.all():
        sampled = _inverse_cdf_top_p(probs, top_p, uniform)
    elif nucleus.any():
        sampled = _inverse_cdf(probs, uniform)
        sampled[nucleus] = _inverse_cdf_top_p(probs[nucleus], top_p[nucleus], uniform[nucleus])
    else:
        sampled = _inverse_cdf(probs, uniform)
    return torch.where(temperature > 0, sampled, logits.argmax(-1))


def _check(request: GenRequest) -> None:
    if request.n < 1 or request.max_new_tokens < 1:
        raise ValueError(f"request {request.request_key}: n and max_new_tokens must be >= 1")
    if request.temperature < 0 or not 0 < request.top_p <= 1:
        raise ValueError(f"request {request.request_key}: need temperature >= 0 and 0 < top_p <= 1")


class TransformersEngine:
    """A Hugging Face causal LM behind the ``Engine`` protocol (see the module docstring)."""

    def __init__(self, config: TransformersConfig) -> None:
        self.config = config
        if config.num_threads is not None:
            torch.set_num_threads(config.num_threads)
        path = resolve_model(config.model)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.encode = PromptEncoder(self.tokenizer)  # request -> prompt ids + prefix ids
        model = AutoModelForCausalLM.from_pretrained(path, dtype=TORCH_DTYPES[config.dtype])
        self.model = model.to(config.device).eval()
        self.device = torch.device(config.device)
        self.max_batch_size = config.max_batch_size
        self.share_prefix = config.share_prefix
        self.engine_id = config.engine_id or f"transformers:{config.model}"
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        self.eos_ids = {i for i in eos_ids if i is not None}
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else min(self.eos_ids, default=0)

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str:
        """The conversation as text, ending where the assistant turn starts."""
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        """One result per request, in order; see the module docstring for batching and seeding."""
        for request in requests:
            _check(request)
        items = self._items(requests)
        samples: list[list[Sample | None]] = [[None] * r.n for r in requests]
        prompt_tokens = [0] * len(requests)
        cached = [0] * len(requests)
        for item, item_samples in zip(items, self._decode(requests, items), strict=True):
            samples[item.req][item.first : item.first + item.count] = item_samples
            prompt_tokens[item.req] = len(item.ids)
            if self.share_prefix:  # samples 2..count reuse the context minus its last token
                cached[item.req] += (item.count - 1) * (len(item.ids) - 1)
        return [
            make_result(r, s, prompt_tokens[i], cached[i], self.engine_id)
            for i, (r, s) in enumerate(zip(requests, samples, strict=True))
        ]

    def _items(self, requests: list[GenRequest]) -> list[_Item]:
        """Requests split into items of <= max_batch_size samples, shortest context first (less padding)."""
        items = [
            _Item(req=i, first=first, count=min(self.max_batch_size, r.n - first), ids=ids)
            for i, r in enumerate(requests)
            for ids in [self.encode(r)]
            for first in range(0, r.n, self.max_batch_size)
        ]
        return sorted(items, key=lambda it: len(it.ids))

    @torch.inference_mode()
    def _prefill(self, contexts: list[list[int]]) -> tuple[DynamicCache, torch.Tensor]:
        """Left-padded forward of the contexts into a fresh cache; returns (cache, 2D attention mask)."""
        cache = _growing_cache(self.model.config)
        width = max(map(len, contexts))
        mask = torch.zeros(len(contexts), width, dtype=torch.long, device=self.device)
        if width == 0:
            return cache, mask
        ids = torch.full_like(mask, self.pad_id)
        for r, ctx in enumerate(contexts):
            if ctx:
                ids[r, -len(ctx) :] = torch.tensor(ctx, device=self.device)
                mask[r, -len(ctx) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, logits_to_keep=1
        )
        return cache, mask

    def _uniforms(self, seeds: list[int], steps: int) -> torch.Tensor:
        """Row r's random stream: ``steps`` uniforms from a generator seeded with its own sample seed."""
        draws = [torch.rand(steps, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in seeds]
        return torch.stack(draws).to(self.device, torch.float32)

    def _admit(self, requests: list[GenRequest], items: list[_Item], ks: list[int], rows: list[_Row]) -> _Batch:
        """Prefill items ``ks`` (once per item when sharing) into a batch of their sample rows."""
        new_rows = [self._row(requests[items[k].req], k) for k in ks for _ in range(items[k].count)]
        seeds = [requests[items[k].req].seed + items[k].first + j for k in ks for j in range(items[k].count)]
        # The last context token stays uncached: it is the first decode input of every sample row.
        if self.share_prefix:
            cache, mask = self._prefill([items[k].ids[:-1] for k in ks])
            expand = torch.tensor([i for i, k in enumerate(ks) for _ in range(items[k].count)], device=self.device)
            cache.batch_select_indices(expand)  # = batch_repeat_interleave, generalised to per-item counts
            mask = mask[expand]
        else:
            cache, mask = self._prefill([items[row.item].ids[:-1] for row in new_rows])
        first = len(rows)
        rows.extend(new_rows)
        steps = max(row.request.max_new_tokens for row in new_rows)
        return _Batch(
            cache=cache,
            mask=mask,
            active=list(range(first, len(rows))),
            next_ids=torch.tensor([items[row.item].ids[-1] for row in new_rows], device=self.device),
            positions=torch.tensor([len(items[row.item].ids) - 1 for row in new_rows], device=self.device),
            temperature=torch.tensor([row.request.temperature for row in new_rows], device=self.device),
            top_p=torch.tensor([row.request.top_p for row in new_rows], device=self.device),
            uniforms=self._uniforms(seeds, steps),
        )

    @torch.inference_mode()
    def _decode(self, requests: list[GenRequest], items: list[_Item]) -> list[list[Sample]]:
        """Decode every item's sample rows with continuous batching.

        Up to ``max_batch_size`` rows decode together; whenever finished rows leave room for the next queued
        item, it is prefilled and joined to the running batch (its cache left-padded to the same length), so
        one long sample no longer holds a nearly empty batch hostage. A row's randomness depends only on its
        own seed and token index, so when it joins does not change what it samples.
        """
        queue = deque(range(len(items)))
        rows: list[_Row] = []
        batch: _Batch | None = None
        while queue or (batch is not None and batch.active):
            room = self.max_batch_size - (len(batch.active) if batch else 0)
            ks = []
            while queue and items[queue[0]].count <= room:
                room -= items[queue[0]].count
                ks.append(queue.popleft())
            if ks:
                joining = self._admit(requests, items, ks, rows)
                batch = joining if batch is None or not batch.active else batch.merge(joining)
            self._step(batch, rows)
        out: list[list[Sample]] = [[] for _ in items]
        for row in rows:
            out[row.item].append(Sample(text=row.text, token_ids=row.token_ids, finish_reason=row.finish_reason))
        return out

    def _step(self, batch: _Batch, rows: list[_Row]) -> None:
        """Decode one token for every active row; finished rows leave the batch."""
        batch.mask = torch.cat([batch.mask, batch.mask.new_ones(len(batch.active), 1)], dim=-1)
        logits = self.model(
            input_ids=batch.next_ids.unsqueeze(-1),
            attention_mask=batch.mask,
            position_ids=batch.positions.unsqueeze(-1),
            past_key_values=batch.cache,
            logits_to_keep=1,
        ).logits[:, -1, :]
        # each row's own next uniform: index = how many tokens it has sampled so far
        drawn = torch.tensor([len(rows[r].token_ids) for r in batch.active], device=self.device)
        uniform = batch.uniforms.gather(1, drawn.clamp(max=batch.uniforms.shape[1] - 1).unsqueeze(1)).squeeze(1)
        tokens = sample_tokens(logits.float(), batch.temperature, batch.top_p, uniform)
        keep = [k for k, tok in enumerate(tokens.tolist()) if not self._append(rows[batch.active[k]], tok)]
        batch.next_ids, batch.positions = tokens, batch.positions + 1
        if len(keep) < len(batch.active):  # drop finished rows so they cost nothing further
            batch.select(torch.tensor(keep, dtype=torch.long, device=self.device))
            batch.active = [batch.active[k] for k in keep]

    def _row(self, request: GenRequest, item: int) -> _Row:
        stops = StopChecker(request.stop)
        if not stops.stops:
            return _Row(request=request, item=item)
        return _Row(request=request, item=item, stops=stops, stream=TextStream(self.tokenizer))

    def _append(self, row: _Row, token: int) -> bool:
        """Add a sampled token to the row; returns True when the row has finished."""
        if token in self.eos_ids:  # EOS ends the sample and is kept out of text and ids
            row.finish_reason = FINISH_EOS
        else:
            row.token_ids.append(token)
            if row.stops is not None and row.stops.feed(row.stream.push(token)) is not None and self._stopped(row):
                return True
            if len(row.token_ids) >= row.request.max_new_tokens:
                row.finish_reason = FINISH_LENGTH
        if row.finish_reason:
            row.text = self.tokenizer.decode(row.token_ids)
        return bool(row.finish_reason)

    def _stopped(self, row: _Row) -> bool:
        """Cut the whole decoded text right after the earliest stop string (the last token may run past it).

        Called once, when the incremental check saw a stop string in the new text; the full decode is the
        sample's text, as for every other finish.
        """
        text = self.tokenizer.decode(row.token_ids)
        end = first_stop_end(text, row.stops.stops)
        if end is not None:
            row.text, row.finish_reason = text[:end], FINISH_STOP
        return end is not None
