"""The ``openai`` backend against a local stand-in server: the engine contract, stop strings, retries, timeouts.

The server is a stdlib ``http.server`` answering ``/v1/completions`` like vLLM does (stop string dropped from
the text and named in ``stop_reason``, ``token_ids`` per choice, ``usage``), with text from the sim engine, so
it is deterministic in the seed. Knobs make it fail, stall, or omit ``stop_reason`` as other servers do.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cluster.actors import AsyncEngine
from cluster.backends import build_engine
from cluster.engine import GenRequest
from cluster.openai_engine import EngineHTTPError, OpenAIConfig, OpenAIEngine
from cluster.sim_engine import SimEngine
from tests.engine_contract import check_engine_contract, check_seeds, check_stop_string

ASSISTANT = "<|assistant|>\n"  # where the sim's chat template ends; the server splits prompt and prefix there
TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
QUICK = {"backoff_s": 0.01, "chat_template": TEMPLATE}


@dataclass
class Behaviour:
    fail_first: int = 0  # answer this many calls with ``fail_status``
    fail_status: int = 503
    delay_s: float = 0.0  # sleep before answering the first ``delayed`` calls
    delayed: int = 0
    report_stop: bool = True  # include vLLM's ``stop_reason``
    calls: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    bodies: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _completion(sim: SimEngine, body: dict, report_stop: bool) -> dict:
    prompt = body["prompt"]
    cut = prompt.rfind(ASSISTANT) + len(ASSISTANT)
    stop = tuple(body.get("stop") or ())
    req = GenRequest("srv", prompt[:cut], prompt[cut:], n=body.get("n", 1), max_new_tokens=body["max_tokens"],
                     stop=stop, temperature=body["temperature"], top_p=body["top_p"], seed=body["seed"])
    [result] = sim.generate([req])
    choices = []
    for i, s in enumerate(result.samples):
        matched = next((x for x in stop if s.finish_reason == "stop" and s.text.endswith(x)), None)
        choice = {"index": i, "text": s.text[: len(s.text) - len(matched)] if matched else s.text,
                  "token_ids": s.token_ids, "finish_reason": "length" if s.finish_reason == "length" else "stop"}
        if report_stop:
            choice["stop_reason"] = matched
        choices.append(choice)
    return {"choices": choices, "usage": {"prompt_tokens": result.prompt_tokens,
                                          "completion_tokens": result.completion_tokens}}


def _handler(sim: SimEngine, b: Behaviour) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with b.lock:
                b.calls += 1
                call = b.calls
                b.in_flight += 1
                b.max_in_flight = max(b.max_in_flight, b.in_flight)
                b.bodies.append(body)
            try:
                if call <= b.delayed:
                    time.sleep(b.delay_s)
                if self.path != "/v1/completions" or call <= b.fail_first:
                    self._send(404 if self.path != "/v1/completions" else b.fail_status, {"error": "nope"})
                else:
                    self._send(200, _completion(sim, body, b.report_stop))
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
                pass
            finally:
                with b.lock:
                    b.in_flight -= 1

        def _send(self, status: int, doc: dict) -> None:
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[str, Behaviour]]:
    behaviour = Behaviour()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(SimEngine(), behaviour))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", behaviour
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _engine(url: str, **kwargs: object) -> OpenAIEngine:
    return OpenAIEngine(OpenAIConfig(base_url=url, **{**QUICK, **kwargs}))


def test_engine_contract_over_http(server):
    url, behaviour = server
    results = check_engine_contract(_engine(url))
    assert behaviour.calls == len(results)  # every result came over HTTP, one completion call per request


def test_built_by_name_through_the_backend_registry(server):
    url, b = server
    engine = build_engine("openai", {"base_url": url, "chat_template": TEMPLATE, "model": "m"})
    assert isinstance(engine, OpenAIEngine)
    prompt = engine.apply_chat_template([{"role": "user", "content": "hi"}])
    assert prompt == SimEngine().apply_chat_template([{"role": "user", "content": "hi"}])
    engine.generate([GenRequest("k", prompt, prefix="I ", n=3, max_new_tokens=7, stop=("\n\n",), seed=5)])
    [body] = b.bodies
    assert body["prompt"] == prompt + "I " and body["model"] == "m" and body["return_token_ids"] is True
    assert (body["n"], body["seed"], body["max_tokens"], body["stop"]) == (3, 5, 7, ["\n\n"])


def test_split_n_sends_one_call_per_sample_with_consecutive_seeds_and_same_samples(server):
    url, b = server
    req = GenRequest("k", _engine(url).apply_chat_template([{"role": "user", "content": "Count."}]), n=3,
                     max_new_tokens=12, temperature=1.0, seed=40)
    together = _engine(url).generate([req])[0]
    b.bodies.clear()
    split = _engine(url, split_n=True).generate([req])[0]
    assert sorted((x["n"], x["seed"]) for x in b.bodies) == [(1, 40), (1, 41), (1, 42)]
    assert [s.text for s in split.samples] == [s.text for s in together.samples]
    assert split.prompt_tokens == together.prompt_tokens  # counted once, not per call
    check_seeds(_engine(url, split_n=True))


def test_stop_string_is_re_appended_when_the_server_does_not_name_it(server):
    url, b = server
    b.report_stop = False
    engine = _engine(url)
    prompt = engine.apply_chat_template([{"role": "user", "content": "Count."}])
    reference = engine.generate([GenRequest("r", prompt, max_new_tokens=50, temperature=0.0)])[0].samples[0].text
    [result] = engine.generate([GenRequest("k", prompt, stop=("\n\n",), max_new_tokens=50, temperature=0.0)])
    assert [(s.text, s.finish_reason) for s in result.samples] == [
        (reference[: reference.index("\n\n") + 2], "stop")]


def test_contract_stop_check_with_vllm_stop_reason(server):
    url, behaviour = server
    sample = check_stop_string(_engine(url))  # two stop strings: only a named stop_reason tells which matched
    never, stop = behaviour.bodies[-1]["stop"]
    assert sample.text.endswith(stop) and not sample.text.endswith(never)


def test_end_of_sequence_is_not_mistaken_for_a_stop_when_the_server_names_stops(server):
    url, _ = server
    engine = _engine(url)
    prompt = engine.apply_chat_template([{"role": "user", "content": "Count."}])
    [result] = engine.generate([GenRequest("k", prompt, stop=("never",), max_new_tokens=50, temperature=0.0)])
    assert [s.finish_reason for s in result.samples] == ["eos"]
    assert not result.samples[0].text.endswith("never")


def test_transient_errors_are_retried_until_success(server):
    url, b = server
    b.fail_first = 2
    result = _engine(url, max_retries=2).generate([GenRequest("k", "x" + ASSISTANT)])
    assert b.calls == 3 and len(result[0].samples) == 1


def test_retries_run_out(server):
    url, b = server
    b.fail_first = 5
    with pytest.raises(EngineHTTPError, match="HTTP 503 after 2 tries"):
        _engine(url, max_retries=1).generate([GenRequest("k", "x" + ASSISTANT)])
    assert b.calls == 2


def test_client_errors_are_not_retried(server):
    url, b = server
    b.fail_first, b.fail_status = 5, 400
    with pytest.raises(EngineHTTPError, match="HTTP 400 after 1 tries"):
        _engine(url, max_retries=3).generate([GenRequest("k", "x" + ASSISTANT)])
    assert b.calls == 1


def test_a_stalled_call_times_out_and_the_retry_succeeds(server):
    url, b = server
    b.delay_s, b.delayed = 2.0, 1
    with pytest.raises(EngineHTTPError, match="timed out"):
        _engine(url, timeout_s=0.2, max_retries=0).generate([GenRequest("k", "x" + ASSISTANT)])
    b.calls, b.delayed = 0, 1
    [result] = _engine(url, timeout_s=0.2, max_retries=1).generate([GenRequest("k", "x" + ASSISTANT)])
    assert b.calls == 2 and result.samples


def test_unreachable_server_fails_after_retries():
    with pytest.raises(EngineHTTPError, match="after 2 tries"):
        _engine("http://127.0.0.1:9/v1", max_retries=1).generate([GenRequest("k", "x")])


def test_concurrency_is_bounded(server):
    url, b = server
    b.delay_s, b.delayed = 0.05, 100
    results = _engine(url, max_concurrency=2).generate([GenRequest(f"k{i}", "x" + ASSISTANT) for i in range(8)])
    assert [r.request_key for r in results] == [f"k{i}" for i in range(8)]
    assert b.calls == 8 and b.max_in_flight <= 2


def test_config_rejects_missing_template_unknown_keys_and_bad_urls():
    with pytest.raises(ValueError, match="chat_template"):
        OpenAIConfig(base_url="http://h/v1")
    with pytest.raises(ValueError, match="send_token_ids"):
        OpenAIConfig(base_url="http://h/v1", chat_template=TEMPLATE, send_token_ids=True)
    with pytest.raises(ValueError, match="http"):
        OpenAIConfig(base_url="localhost:8000", chat_template=TEMPLATE)
    with pytest.raises(TypeError):
        OpenAIConfig(base_url="http://h/v1", chat_template=TEMPLATE, temprature=0.5)  # typo: unknown key


def test_concurrent_agenerate_calls_share_the_pool_and_do_not_wait_for_each_other(server):
    url, b = server
    b.delay_s, b.delayed = 0.5, 1  # the first call to arrive stalls
    engine = _engine(url, max_concurrency=4)
    assert isinstance(engine, AsyncEngine)  # the actor awaits it directly instead of queueing batches
    slow, fast = [GenRequest("slow", "x" + ASSISTANT)], [GenRequest(f"f{i}", "y" + ASSISTANT) for i in range(3)]

    async def both() -> tuple[list, list, float]:
        slow_task = asyncio.ensure_future(engine.agenerate(slow))
        await asyncio.sleep(0.1)  # the slow call is on the server
        fast_results = await engine.agenerate(fast)
        done_while_slow_pending = not slow_task.done()
        return await slow_task, fast_results, done_while_slow_pending

    slow_results, fast_results, overtook = asyncio.run(both())
    assert overtook  # the second call finished while the first was still in flight
    assert [r.request_key for r in fast_results] == ["f0", "f1", "f2"] and slow_results[0].request_key == "slow"
    assert fast_results == engine.generate(fast)  # the same results as the blocking call
    assert b.max_in_flight >= 2
