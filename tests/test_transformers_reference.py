"""The transformers engine against references computed from the model itself, not against its own output.

Greedy decoding must equal ``model.generate(do_sample=False)`` token for token (shared prefix cache, padding
and continuous batching included). Sampling must follow the distribution the request asks for: the empirical
first-token distribution over many seeded samples is compared with ``softmax(logits / T)`` (truncated to the
top-p nucleus and renormalised) computed by one plain forward pass, by total-variation distance. The bound is
a few times the expected distance of an honest sampler, and each test first checks that the bound separates
the asked-for distribution from the one a typical bug gives (temperature inverted, top-p ignored), so a pass
means something. Seeds are fixed: every run draws the same samples.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from cluster.engine import GenRequest
from cluster.transformers_config import TransformersConfig
from cluster.transformers_engine import TransformersEngine

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUESTIONS = ("Hi", "What is 12 + 30? Think step by step.", "Name three primes.")
PREFIXES = ("", "Step 1: add.\n\n")
GREEDY_TOKENS = 24
SAMPLES = 4000  # per distribution check: expected TV distance ~0.03 for this model's ~40 likely tokens
TV_MARGIN = 3.0  # pass when TV(empirical, expected) < TV_MARGIN * (expected TV of an honest sampler)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return TransformersEngine(TransformersConfig(str(tiny_model_dir), max_batch_size=512))


def _requests(engine: TransformersEngine, **kwargs) -> list[GenRequest]:
    prompts = [engine.apply_chat_template([{"role": "user", "content": q}]) for q in QUESTIONS]
    return [GenRequest(f"q{i}-{j}", p, prefix, **kwargs)
            for i, p in enumerate(prompts) for j, prefix in enumerate(PREFIXES)]


@torch.inference_mode()
def _hf_greedy(model, ids: list[int], max_new_tokens: int, eos_ids: set[int]) -> list[int]:
    """``model.generate`` greedy continuation, cut before the first EOS (the engine leaves EOS out)."""
    out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                         do_sample=False, max_new_tokens=max_new_tokens)[0, len(ids):].tolist()
    cut = next((k for k, tok in enumerate(out) if tok in eos_ids), len(out))
    return out[:cut]


@pytest.mark.parametrize("share_prefix", [True, False])
def test_greedy_equals_model_generate_token_for_token(tiny_model_dir, model, share_prefix):
    engine = TransformersEngine(TransformersConfig(str(tiny_model_dir), max_batch_size=4, share_prefix=share_prefix))
    requests = _requests(engine, n=2, max_new_tokens=GREEDY_TOKENS, temperature=0.0)
    results = engine.generate(requests)  # 12 rows through 4 slots: padding and rows joining mid-decode
    for request, result in zip(requests, results, strict=True):
        want = _hf_greedy(model, engine.encode(request), GREEDY_TOKENS, engine.eos_ids)
        assert [s.token_ids for s in result.samples] == [want, want], request.request_key
        assert result.samples[0].text == engine.tokenizer.decode(want)
    assert len({tuple(r.samples[0].token_ids) for r in results}) == len(requests)  # the contexts really differ


@torch.inference_mode()
def _next_token_probs(model, ids: list[int], temperature: float, top_p: float) -> torch.Tensor:
    """The distribution a request asks for: softmax(logits / T), cut to the smallest top set with mass >= top_p."""
    logits = model(torch.tensor([ids])).logits[0, -1].double()
    probs = torch.softmax(logits / temperature, -1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < top_p  # a token is in if the mass before it is short
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
        probs = probs / probs.sum()
    return probs


def _first_tokens(engine: TransformersEngine, request: GenRequest) -> torch.Tensor:
    """Counts of the first sampled token over the request's samples (an EOS sample counts as the EOS id)."""
    [result] = engine.generate([request])
    eos = min(engine.eos_ids)
    tokens = [s.token_ids[0] if s.token_ids else eos for s in result.samples]
    return torch.bincount(torch.tensor(tokens), minlength=len(engine.tokenizer)).double()


def _tv(p: torch.Tensor, q: torch.Tensor) -> float:
    return 0.5 * (p - q).abs().sum().item()


def _honest_tv(p: torch.Tensor, n: int) -> float:
    """Expected TV distance of n honest samples from p: sum over tokens of E|count/n - p_i| / 2 (normal approx)."""
    return 0.5 * sum(math.sqrt(2 * x * (1 - x) / (math.pi * n)) for x in p.tolist())


def _sampling_request(engine: TransformersEngine, temperature: float, top_p: float) -> GenRequest:
    prompt = engine.apply_chat_template([{"role": "user", "content": QUESTIONS[1]}])
    return GenRequest("dist", prompt, "Step 1: ", n=SAMPLES, max_new_tokens=1, temperature=temperature,
                      top_p=top_p, seed=1234)


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_sampled_first_tokens_follow_softmax_of_logits_over_temperature(model, engine, temperature):
    request = _sampling_request(engine, temperature, top_p=1.0)
    ids = engine.encode(request)
    want = _next_token_probs(model, ids, temperature, 1.0)
    bound = TV_MARGIN * _honest_tv(want, SAMPLES)
    inverted = _next_token_probs(model, ids, 1 / temperature, 1.0)  # what logits * T would sample
    assert _tv(want, inverted) > 2 * bound  # the check can tell the two apart
    got = _first_tokens(engine, request) / SAMPLES
    assert _tv(got, want) < bound, (_tv(got, want), bound)


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 0.6), (1.5, 0.6)])
def test_top_p_samples_only_the_nucleus_in_its_renormalised_proportions(model, engine, temperature, top_p):
    request = _sampling_request(engine, temperature, top_p)
    ids = engine.encode(request)
    want = _next_token_probs(model, ids, temperature, top_p)
    untruncated = _next_token_probs(model, ids, temperature, 1.0)
    outside = untruncated[want == 0].sum().item()
    assert outside > 0.3  # a real cut: ignoring top-p would put this much mass outside the nucleus
    bound = TV_MARGIN * _honest_tv(want, SAMPLES)
    assert _tv(want, untruncated) > 2 * bound
    counts = _first_tokens(engine, request)
    assert counts[want == 0].sum().item() == 0  # never a token outside the nucleus
    assert _tv(counts / SAMPLES, want) < bound, (_tv(counts / SAMPLES, want), bound)


def test_a_stop_string_spanning_tokens_ends_the_sample_where_the_whole_text_first_shows_it(engine):
    """The incremental stop check (new text per token) must find a stop string split over several tokens,
    and cut where a search of the whole decoded text would: here three one-character tokens."""
    [request] = _requests(engine, n=1, max_new_tokens=GREEDY_TOKENS, temperature=0.0)[1:2]
    [reference] = engine.generate([request])[0].samples
    ids, decode = reference.token_ids, engine.tokenizer.decode
    k = next(k for k in range(len(ids) - 2) if all(len(decode([t])) == 1 for t in ids[k : k + 3]))
    stop = decode(ids[k : k + 3])
    want = next(j for j in range(1, len(ids) + 1) if stop in decode(ids[:j]))
    [sample] = engine.generate([dataclasses.replace(request, stop=("never-generated-stop", stop))])[0].samples
    assert sample.finish_reason == "stop"
    assert sample.token_ids == ids[:want]
    assert sample.text == reference.text[: reference.text.index(stop) + len(stop)]
