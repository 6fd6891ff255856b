"""The vLLM backend: pure request/output mapping always; the shared engine contract where vLLM runs.

The contract test needs vLLM, a GPU and a local model folder in ``TRACEMILL_VLLM_MODEL``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest

from cluster.engine import GenRequest
from cluster.vllm_engine import (
    VLLMConfig,
    finish_reason,
    is_engine_dead,
    overlapping_seeds,
    sampling_kwargs,
    to_result,
)


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


def test_vllm_engine_meets_the_engine_contract():
    pytest.importorskip("vllm")
    model = os.environ.get("TRACEMILL_VLLM_MODEL")
    if not model:
        pytest.skip("set TRACEMILL_VLLM_MODEL to a local model folder")
    from cluster.vllm_engine import VLLMEngine
    from tests.engine_contract import check_engine_contract

    results = check_engine_contract(VLLMEngine(VLLMConfig(model=model, gpu_memory_utilization=0.5,
                                                          enforce_eager=True)))
    assert any(r.cached_tokens > 0 for r in results)  # the contract repeats one prompt: prefix cache hits
