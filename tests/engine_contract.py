"""Behaviour every ``Engine`` backend must show, as plain functions taking an engine.

Reused by the tests of each backend (transformers, sim, vLLM, OpenAI-compatible): call
``check_engine_contract(engine)`` (it returns every result the checks saw, so a backend's test can add its
own expectations, e.g. on cached tokens) or the single checks. The checks only use the ``Engine`` protocol, and
derive stop strings and prefixes from the engine's own outputs, so they hold for any model — random
weights included. They assume a backend is deterministic for a fixed seed and batch, which every backend
promises (retries must reproduce the same sample).
"""

from __future__ import annotations

from cluster.engine import Engine, GenRequest, GenResult, Sample

FINISH_REASONS = {"stop", "eos", "length"}
QUESTION = [{"role": "user", "content": "Count from one to twenty, one number per line."}]
LONG = 24  # max_new_tokens of the reference generations the checks below cut up
SHORT = 5  # max_new_tokens for the length check
N = 4  # samples per request in the n-sample checks


def _prompt(engine: Engine) -> str:
    return engine.apply_chat_template(QUESTION)


def _one(engine: Engine, **kwargs) -> GenResult:
    [result] = engine.generate([GenRequest(request_key="contract", prompt=_prompt(engine), **kwargs)])
    return result


def check_results_in_request_order(engine: Engine) -> None:
    """One result per request, in request order, each with ``n`` well-formed samples and token counts."""
    prompt = _prompt(engine)
    requests = [
        GenRequest(request_key=f"r{i}", prompt=prompt, prefix="1" * i, n=n, max_new_tokens=SHORT, seed=i)
        for i, n in enumerate([2, 1, 3])
    ]
    results = engine.generate(requests)
    assert [r.request_key for r in results] == [q.request_key for q in requests]
    for request, result in zip(requests, results, strict=True):
        assert len(result.samples) == request.n
        assert result.prompt_tokens > 0
        assert result.completion_tokens == sum(len(s.token_ids) for s in result.samples)
        for sample in result.samples:
            assert sample.finish_reason in FINISH_REASONS
            assert isinstance(sample.text, str)
            assert len(sample.token_ids) <= request.max_new_tokens
    assert engine.generate([]) == []


def check_max_new_tokens(engine: Engine) -> None:
    """No sample exceeds ``max_new_tokens``; one that reaches it finishes with ``"length"``."""
    result = _one(engine, n=N, max_new_tokens=SHORT, temperature=1.0, seed=3)
    reasons = [s.finish_reason for s in result.samples]
    assert "length" in reasons, reasons
    for sample in result.samples:
        assert len(sample.token_ids) <= SHORT
        if sample.finish_reason == "length":
            assert len(sample.token_ids) == SHORT


def check_seeds(engine: Engine) -> None:
    """The same seed reproduces the same samples; different seeds (and samples) generally differ."""
    first = _one(engine, n=N, max_new_tokens=SHORT * 2, temperature=1.0, seed=7)
    again = _one(engine, n=N, max_new_tokens=SHORT * 2, temperature=1.0, seed=7)
    other = _one(engine, n=N, max_new_tokens=SHORT * 2, temperature=1.0, seed=1007)
    texts = [s.text for s in first.samples]
    assert texts == [s.text for s in again.samples]
    assert texts != [s.text for s in other.samples]
    assert len(set(texts)) > 1, "samples of one request should use different seeds"


def _reference(engine: Engine) -> Sample:
    """A greedy generation the other checks cut up; it must be long enough to cut."""
    [sample] = _one(engine, max_new_tokens=LONG, temperature=0.0).samples
    assert len(sample.text) >= 4 and len(sample.token_ids) >= 2, f"reference too short to cut: {sample}"
    return sample


def check_stop_string(engine: Engine) -> Sample:
    """Generation ends at the first stop string, which is kept as the end of the text."""
    reference = _reference(engine).text
    stop = reference[len(reference) // 2 : len(reference) // 2 + 2]  # a string known to appear
    cut = reference[: reference.index(stop) + len(stop)]
    result = _one(engine, max_new_tokens=LONG, temperature=0.0, stop=("never-generated-stop", stop))
    [sample] = result.samples
    assert sample.finish_reason == "stop"
    assert sample.text == cut
    return sample


def check_prefix_continued(engine: Engine) -> None:
    """An assistant prefix is continued: the result is only the continuation, as if generated in one go.

    The prefix is the engine's own greedy text for the first half of the tokens, so it ends on a token
    boundary and re-tokenizes to the same ids.
    """
    sample = _reference(engine)
    reference, half = sample.text, len(sample.token_ids) // 2
    prefix = _one(engine, max_new_tokens=half, temperature=0.0).samples[0].text
    assert reference.startswith(prefix) and len(prefix) < len(reference), (prefix, reference)
    continuation = _one(engine, prefix=prefix, max_new_tokens=LONG, temperature=0.0).samples[0].text
    assert continuation, "the prefix was not continued"
    assert reference.startswith(prefix + continuation) or (prefix + continuation).startswith(reference), (
        prefix,
        continuation,
        reference,
    )


CHECKS = (
    check_results_in_request_order,
    check_max_new_tokens,
    check_seeds,
    check_stop_string,
    check_prefix_continued,
)


class _Recorder:
    """The engine, with every result it returns kept in order."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.results = engine, []

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str:
        return self.engine.apply_chat_template(messages)

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        results = self.engine.generate(requests)
        self.results.extend(results)
        return results


def check_engine_contract(engine: Engine) -> list[GenResult]:
    """Run every check above on ``engine``; returns all results the checks received, in order."""
    assert isinstance(engine, Engine)
    recorder = _Recorder(engine)
    for check in CHECKS:
        check(recorder)
    return recorder.results
