"""The transformers backend: engine contract, batching, shared prefix, seeding, sampling ops."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cluster.engine import GenRequest
from cluster.transformers_config import TransformersConfig
from cluster.transformers_engine import NUCLEUS_CANDIDATES, TransformersEngine, sample_tokens
from tests.engine_contract import check_engine_contract

QUESTIONS = ("Hi", "What is 12 + 30? Think step by step.", "Name three primes.")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return TransformersEngine(TransformersConfig(str(tiny_model_dir), max_batch_size=8))


@pytest.fixture(scope="module")
def plain_engine(tiny_model_dir):
    return TransformersEngine(TransformersConfig(str(tiny_model_dir), max_batch_size=8, share_prefix=False))


def _requests(engine: TransformersEngine, **kwargs) -> list[GenRequest]:
    """Requests with different prompt and prefix lengths, so batches need left padding."""
    prompts = [engine.apply_chat_template([{"role": "user", "content": q}]) for q in QUESTIONS]
    return [
        GenRequest(request_key=f"q{i}", prompt=p, prefix=prefix, seed=10 * i, **kwargs)
        for i, p in enumerate(prompts)
        for prefix in ("", "Step 1: add.\n\n")
    ]


def _texts(results) -> list[list[str]]:
    return [[s.text for s in r.samples] for r in results]


def test_engine_contract(engine):
    results = check_engine_contract(engine)
    assert any(r.cached_tokens > 0 for r in results)  # n > 1 requests reuse their prefilled context


def test_engine_contract_without_prefix_sharing(plain_engine):
    results = check_engine_contract(plain_engine)
    assert all(r.cached_tokens == 0 for r in results)  # every sample row prefills its own context


@pytest.mark.parametrize("n", [1, 3])
def test_batched_greedy_equals_one_at_a_time(engine, n):
    requests = _requests(engine, n=n, max_new_tokens=12, temperature=0.0)
    batched = engine.generate(requests)
    single = [engine.generate([r])[0] for r in requests]
    assert [[s.token_ids for s in r.samples] for r in batched] == [
        [s.token_ids for s in r.samples] for r in single
    ]
    assert len({tuple(r.samples[0].token_ids) for r in batched}) > 1  # the prompts really differ


def test_rows_joining_a_running_batch_sample_what_they_would_alone(tiny_model_dir, engine):
    """Continuous batching: with room for 3 rows, finished rows are replaced by queued ones mid-decode
    (their caches left-padded to the running batch); greedy and seeded samples match one-at-a-time runs."""
    narrow = TransformersEngine(TransformersConfig(str(tiny_model_dir), max_batch_size=3))
    for temperature in (0.0, 1.0):
        requests = [GenRequest(r.request_key, r.prompt, r.prefix, n=1, max_new_tokens=4 + 5 * i,
                               temperature=temperature, seed=r.seed)
                    for i, r in enumerate(_requests(engine))]
        joined = narrow.generate(requests)
        single = [engine.generate([r])[0] for r in requests]
        assert [[s.token_ids for s in r.samples] for r in joined] == [[s.token_ids for s in r.samples] for r in single]
        assert len({len(r.samples[0].token_ids) for r in joined}) > 2  # rows really finish at different times


def test_one_token_context_batches_with_long_ones(engine):
    """A one-token context leaves its prefill row all padding; that row must not disturb the others."""
    requests = [GenRequest("tiny", "H", n=2, max_new_tokens=8, temperature=0.0)]
    requests += _requests(engine, n=1, max_new_tokens=8, temperature=0.0)[:2]
    batched = engine.generate(requests)
    single = [engine.generate([r])[0] for r in requests]
    assert [[s.token_ids for s in r.samples] for r in batched] == [[s.token_ids for s in r.samples] for r in single]
    assert batched[0].prompt_tokens == 1 and batched[0].cached_tokens == 0


def test_shared_prefix_path_matches_plain_path(engine, plain_engine):
    for temperature in (0.0, 1.0):
        requests = _requests(engine, n=3, max_new_tokens=12, temperature=temperature)
        assert _texts(engine.generate(requests)) == _texts(plain_engine.generate(requests))


def test_cached_tokens_count_reused_context_of_samples_after_the_first(engine, plain_engine):
    [request] = _requests(engine, n=4, max_new_tokens=3)[:1]
    [shared] = engine.generate([request])
    [plain] = plain_engine.generate([request])
    assert shared.prompt_tokens == plain.prompt_tokens == len(engine.encode(request))
    assert shared.cached_tokens == 3 * (shared.prompt_tokens - 1)
    assert plain.cached_tokens == 0


def test_samples_do_not_depend_on_batch_composition(engine):
    requests = _requests(engine, n=2, max_new_tokens=10, temperature=1.0, top_p=0.9)
    together = _texts(engine.generate(requests))
    alone = _texts(engine.generate(requests[3:4]))
    assert together[3] == alone[0]


def test_sample_i_uses_seed_plus_i(engine):
    [request] = _requests(engine, n=3, max_new_tokens=10, temperature=1.0)[:1]
    [three] = engine.generate([request])
    [shifted] = engine.generate([dataclasses.replace(request, n=1, seed=request.seed + 2)])
    assert three.samples[2].text == shifted.samples[0].text


def test_large_n_split_over_batches_matches_one_batch(tiny_model_dir, engine):
    small = TransformersEngine(TransformersConfig(str(tiny_model_dir), max_batch_size=2))
    [request] = _requests(engine, n=5, max_new_tokens=8, temperature=1.0)[:1]
    [split] = small.generate([request])
    [whole] = engine.generate([request])
    assert [s.text for s in split.samples] == [s.text for s in whole.samples]
    assert split.cached_tokens == (5 - 3) * (split.prompt_tokens - 1)  # three batches: 2 + 2 + 1 samples


def test_eos_ends_sample_and_is_left_out(tiny_model_dir, engine):
    [request] = _requests(engine, n=1, max_new_tokens=8, temperature=0.0)[:1]
    [reference] = engine.generate([request])
    eos_engine = TransformersEngine(TransformersConfig(str(tiny_model_dir)))
    eos_engine.eos_ids = {reference.samples[0].token_ids[2]}  # make the third greedy token end the sample
    [sample] = eos_engine.generate([request])[0].samples
    assert sample.finish_reason == "eos"
    assert sample.token_ids == reference.samples[0].token_ids[:2]
    assert sample.text == reference.samples[0].text[:2]  # one character per token in the tiny tokenizer


def test_invalid_requests_are_rejected(engine):
    prompt = engine.apply_chat_template([{"role": "user", "content": "Hi"}])
    for bad in (dict(n=0), dict(max_new_tokens=0), dict(temperature=-1.0), dict(top_p=0.0)):
        with pytest.raises(ValueError):
            engine.generate([GenRequest(request_key="bad", prompt=prompt, **bad)])


def test_sample_tokens_greedy_at_zero_temperature():
    logits = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 1.0]])
    picked = sample_tokens(logits, torch.zeros(2), torch.ones(2), torch.tensor([0.99, 0.01]))
    assert picked.tolist() == [1, 0]


def test_sample_tokens_follows_probabilities_by_inverse_cdf():
    probs = torch.tensor([0.25, 0.5, 0.25])
    uniforms = (torch.arange(100) + 0.5) / 100  # an even grid stands in for random draws
    rows = len(uniforms)
    picked = sample_tokens(probs.log().expand(rows, -1), torch.ones(rows), torch.ones(rows), uniforms)
    assert torch.bincount(picked, minlength=3).tolist() == [25, 50, 25]


def test_sample_tokens_top_p_keeps_only_the_nucleus():
    probs = torch.tensor([0.1, 0.6, 0.3])
    grid = (torch.arange(90) + 0.5) / 90
    uniforms = torch.cat([grid, grid])  # the same draws with and without top-p
    rows = len(uniforms)
    top_p = torch.tensor([0.7] * len(grid) + [1.0] * len(grid))
    picked = sample_tokens(probs.log().expand(rows, -1), torch.ones(rows), top_p, uniforms)
    nucleus, full = picked[: len(grid)], picked[len(grid) :]
    assert torch.bincount(nucleus, minlength=3).tolist() == [0, 60, 30]  # 0.6 + 0.3 reaches 0.7; 0 is cut
    assert torch.bincount(full, minlength=3).tolist() == [9, 54, 27]


@pytest.mark.slow
def test_smollm2_continues_prefix_and_stops_at_blank_line():
    engine = TransformersEngine(TransformersConfig("smollm2-135m-instruct"))
    count = engine.apply_chat_template(
        [{"role": "user", "content": "List the numbers from 1 to 10, separated by commas."}]
    )
    [numbers] = engine.generate(
        [GenRequest("count", count, prefix="1, 2, 3, 4, 5,", max_new_tokens=12, temperature=0.0)]
    )
    assert numbers.samples[0].text.startswith(" 6, 7, 8")
    question = "Tom has 3 apples and buys 5 more. Then he gives away 2. How many apples does he have? Solve step by step."
    prompt = engine.apply_chat_template([{"role": "user", "content": question}])
    request = GenRequest(
        "step",
        prompt,
        prefix="Step 1: Tom starts with 3 apples.\n\n",
        max_new_tokens=60,
        stop=("\n\n",),
        temperature=0.0,
    )
    [step] = engine.generate([request])[0].samples
    assert step.finish_reason == "stop"
    assert step.text.endswith("\n\n") and "\n\n" not in step.text[:-2]
    assert "apples" in step.text and not step.text.startswith("Step 1")


def test_sample_tokens_top_p_wider_than_the_top_k_pass_falls_back_to_a_full_sort():
    vocab = 4 * NUCLEUS_CANDIDATES
    flat = -torch.arange(vocab) * 1e-3  # nearly uniform: the nucleus spans most of the vocabulary
    probs = flat.softmax(-1)
    nucleus_size = int(((probs.cumsum(-1) - probs) < 0.5).sum())
    assert nucleus_size > NUCLEUS_CANDIDATES
    peaked = torch.zeros(vocab).index_fill_(0, torch.tensor([7]), 20.0)  # a narrow row in the same batch
    grid = (torch.arange(8 * vocab) + 0.5) / (8 * vocab)
    logits = torch.stack([flat, peaked]).repeat_interleave(len(grid), 0)
    rows = len(logits)
    picked = sample_tokens(logits, torch.ones(rows), torch.full((rows,), 0.5), torch.cat([grid, grid]))
    assert set(picked[: len(grid)].tolist()) == set(range(nucleus_size))
    assert set(picked[len(grid) :].tolist()) == {7}


def test_growing_cache_layer_matches_dynamic_layer_through_updates_and_row_selection():
    from transformers.cache_utils import DynamicLayer

    from cluster.transformers_engine import _GrowingLayer

    torch.manual_seed(0)
    plain, growing = DynamicLayer(), _GrowingLayer()
    rows = 3
    for step, length in enumerate([5, 1, 1, 2, 1, 1, 1]):
        keys, values = torch.randn(rows, 2, length, 4), torch.randn(rows, 2, length, 4)
        expected, got = plain.update(keys, values), growing.update(keys, values)
        assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])
        if step == 3:  # drop a finished row, as the engine does mid-decode
            for layer in (plain, growing):
                layer.batch_select_indices(torch.tensor([0, 2]))
            rows = 2
    assert growing.get_seq_length() == plain.get_seq_length() == 12
